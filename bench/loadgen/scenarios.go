package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is what every scenario needs.
type Config struct {
	// Base is the homeserver's client API URL.
	Base string
	// Proc, when set, is the server process to measure CPU and memory of.
	Proc *Process
	// Prefix makes user names unique across runs against one server.
	Prefix string
	HTTP   *http.Client
}

// Result is one scenario's measurements, printed as one JSON line.
type Result map[string]any

func (c Config) register(ctx context.Context, n, concurrency int, tag string) ([]*Client, []time.Duration, error) {
	out := make([]*Client, n)
	lat := make([]time.Duration, n)
	err := parallel(n, concurrency, func(i int) error {
		start := time.Now()
		cl, err := Register(ctx, c.Base, c.HTTP, fmt.Sprintf("%s%s%d", c.Prefix, tag, i), "loadgen-password")
		lat[i] = time.Since(start)
		out[i] = cl
		return err
	})
	return out, lat, err
}

// parallel runs fn(0..n-1) on `workers` goroutines and returns the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range max(1, min(workers, n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// cpuMeter measures the server's CPU time across a scenario's measured part.
type cpuMeter struct {
	proc  *Process
	start float64
}

func (c Config) startCPU() (*cpuMeter, error) {
	m := &cpuMeter{proc: c.Proc}
	if c.Proc == nil {
		return m, nil
	}
	// Let the setup's trailing work finish so it is not billed to the scenario.
	v, err := c.Proc.SettledCPU(30 * time.Second)
	m.start = v
	return m, err
}

// stop returns the CPU seconds used since start, including work the server does
// after the last response.
func (m *cpuMeter) stop(r Result) error {
	if m.proc == nil {
		return nil
	}
	end, err := m.proc.SettledCPU(60 * time.Second)
	if err != nil {
		return err
	}
	r["cpu_s"] = round(end - m.start)
	if peak, err := m.proc.PeakRSSMiB(); err == nil {
		r["peak_rss_mib"] = round(peak)
	}
	return nil
}

func round(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}

// percentiles adds p50/p95/p99 of lat in milliseconds to r.
func percentiles(r Result, prefix string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	at := func(p float64) float64 {
		i := min(len(s)-1, int(float64(len(s))*p))
		return round(float64(s[i].Microseconds()) / 1000)
	}
	r[prefix+"p50_ms"], r[prefix+"p95_ms"], r[prefix+"p99_ms"] = at(0.50), at(0.95), at(0.99)
}

// RunRegister registers n users with `concurrency` clients at once.
func RunRegister(ctx context.Context, c Config, n, concurrency int) (Result, error) {
	r := Result{"scenario": "register", "users": n, "concurrency": concurrency}
	cpu, err := c.startCPU()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	_, lat, err := c.register(ctx, n, concurrency, "reg")
	if err != nil {
		return nil, err
	}
	el := time.Since(start)
	r["users_per_s"] = round(float64(n) / el.Seconds())
	percentiles(r, "", lat)
	return r, cpu.stop(r)
}

// RunSend has `senders` of a room's `members` send n messages in total, as fast as
// they are answered.
func RunSend(ctx context.Context, c Config, n, senders, members int) (Result, error) {
	r := Result{"scenario": "send", "messages": n, "senders": senders, "members": members}
	users, _, err := c.register(ctx, max(members, senders), 8, "send")
	if err != nil {
		return nil, err
	}
	roomID, err := users[0].CreateRoom(ctx, "send")
	if err != nil {
		return nil, err
	}
	if err := parallel(len(users)-1, 8, func(i int) error { return users[i+1].Join(ctx, roomID) }); err != nil {
		return nil, err
	}
	cpu, err := c.startCPU()
	if err != nil {
		return nil, err
	}
	lat := make([]time.Duration, n)
	start := time.Now()
	var next atomic.Int64
	err = parallel(senders, senders, func(s int) error {
		for {
			i := int(next.Add(1) - 1)
			if i >= n {
				return nil
			}
			t := time.Now()
			if err := users[s].Send(ctx, roomID, fmt.Sprintf("l%d", i), "load "+strconv.Itoa(i)); err != nil {
				return err
			}
			lat[i] = time.Since(t)
		}
	})
	if err != nil {
		return nil, err
	}
	el := time.Since(start)
	r["msgs_per_s"] = round(float64(n) / el.Seconds())
	percentiles(r, "", lat)
	if err := cpu.stop(r); err != nil {
		return nil, err
	}
	if v, ok := r["cpu_s"].(float64); ok {
		r["cpu_ms_per_msg"] = round(v * 1000 / float64(n))
	}
	return r, nil
}

// RunFanout has `receivers` members long-poll /sync while one sender sends at
// `rate` messages per second for `d`: the delivery latency from the send request
// to the message arriving in each receiver's sync.
func RunFanout(ctx context.Context, c Config, receivers int, rate float64, d time.Duration) (Result, error) {
	r := Result{"scenario": "fanout", "receivers": receivers, "rate_per_s": rate, "seconds": d.Seconds()}
	users, _, err := c.register(ctx, receivers+1, 8, "fan")
	if err != nil {
		return nil, err
	}
	sender := users[0]
	roomID, err := sender.CreateRoom(ctx, "fanout")
	if err != nil {
		return nil, err
	}
	if err := parallel(receivers, 8, func(i int) error { return users[i+1].Join(ctx, roomID) }); err != nil {
		return nil, err
	}
	filter := `{"room":{"timeline":{"limit":50},"state":{"lazy_load_members":true}},"presence":{"types":[]},"account_data":{"types":[]}}`

	var mu sync.Mutex
	sentAt := map[int]time.Time{}
	var lat []time.Duration
	var received atomic.Int64
	pollCtx, stopPolls := context.WithCancel(ctx)
	defer stopPolls()
	ready := make(chan error, receivers)
	var wg sync.WaitGroup
	for _, u := range users[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			first, err := u.Sync(pollCtx, "", 0, filter)
			ready <- err
			if err != nil {
				return
			}
			since := first.NextBatch
			for pollCtx.Err() == nil {
				resp, err := u.Sync(pollCtx, since, 30*time.Second, filter)
				if err != nil {
					return
				}
				now := time.Now()
				since = resp.NextBatch
				for _, ev := range resp.Rooms.Join[roomID].Timeline.Events {
					body, _ := ev.Content["body"].(string)
					seqText, ok := strings.CutPrefix(body, "fanout ")
					if !ok {
						continue
					}
					seq, _ := strconv.Atoi(seqText)
					mu.Lock()
					if t, ok := sentAt[seq]; ok {
						lat = append(lat, now.Sub(t))
					}
					mu.Unlock()
					received.Add(1)
				}
			}
		}()
	}
	for range receivers {
		if err := <-ready; err != nil {
			return nil, fmt.Errorf("receiver initial sync: %w", err)
		}
	}
	time.Sleep(500 * time.Millisecond) // let the long-polls park
	cpu, err := c.startCPU()
	if err != nil {
		return nil, err
	}
	total := int(rate * d.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	tick := time.NewTicker(interval)
	var sendErr error
	for i := range total {
		<-tick.C
		mu.Lock()
		sentAt[i] = time.Now()
		mu.Unlock()
		// Sent asynchronously: a slow send must not lower the offered rate.
		go func() {
			if err := sender.Send(ctx, roomID, fmt.Sprintf("f%d-%d", i, rand.Int()), "fanout "+strconv.Itoa(i)); err != nil {
				mu.Lock()
				sendErr = err
				mu.Unlock()
			}
		}()
	}
	tick.Stop()
	want := int64(total * receivers)
	deadline := time.Now().Add(10 * time.Second)
	for received.Load() < want && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	stopPolls()
	wg.Wait()
	if sendErr != nil {
		return nil, fmt.Errorf("send: %w", sendErr)
	}
	r["messages"] = total
	r["delivered_share"] = round(float64(received.Load()) / float64(want))
	mu.Lock()
	percentiles(r, "", lat)
	mu.Unlock()
	if err := cpu.stop(r); err != nil {
		return nil, err
	}
	if v, ok := r["cpu_s"].(float64); ok {
		r["cpu_ms_per_msg"] = round(v * 1000 / float64(total))
	}
	return r, nil
}

// RunRooms has one user create `rooms` rooms and `joiners` users join each.
func RunRooms(ctx context.Context, c Config, rooms, joiners int) (Result, error) {
	r := Result{"scenario": "rooms", "rooms": rooms, "joiners": joiners}
	users, _, err := c.register(ctx, joiners+1, 8, "rooms")
	if err != nil {
		return nil, err
	}
	cpu, err := c.startCPU()
	if err != nil {
		return nil, err
	}
	ids := make([]string, rooms)
	start := time.Now()
	if err := parallel(rooms, 4, func(i int) error {
		var err error
		ids[i], err = users[0].CreateRoom(ctx, fmt.Sprintf("room %d", i))
		return err
	}); err != nil {
		return nil, err
	}
	createEl := time.Since(start)
	start = time.Now()
	if err := parallel(rooms*joiners, 8, func(i int) error { return users[1+i%joiners].Join(ctx, ids[i/joiners]) }); err != nil {
		return nil, err
	}
	joinEl := time.Since(start)
	r["creates_per_s"] = round(float64(rooms) / createEl.Seconds())
	r["joins_per_s"] = round(float64(rooms*joiners) / joinEl.Seconds())
	return r, cpu.stop(r)
}

// RunInitialSync times the initial /sync of a user in `rooms` rooms with `history`
// messages each (Element's filter: lazy-loaded members, 10 timeline events).
func RunInitialSync(ctx context.Context, c Config, rooms, history int) (Result, error) {
	r := Result{"scenario": "initial_sync", "rooms": rooms, "history": history}
	users, _, err := c.register(ctx, 2, 2, "isync")
	if err != nil {
		return nil, err
	}
	owner, reader := users[0], users[1]
	if err := parallel(rooms, 4, func(i int) error {
		id, err := owner.CreateRoom(ctx, fmt.Sprintf("history %d", i))
		if err != nil {
			return err
		}
		if err := reader.Join(ctx, id); err != nil {
			return err
		}
		for j := range history {
			if err := owner.Send(ctx, id, fmt.Sprintf("h%d-%d", i, j), "history "+strconv.Itoa(j)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	filter := `{"room":{"timeline":{"limit":10},"state":{"lazy_load_members":true}}}`
	var times []time.Duration
	for range 3 {
		start := time.Now()
		resp, err := reader.Sync(ctx, "", 0, filter)
		if err != nil {
			return nil, err
		}
		times = append(times, time.Since(start))
		if got := len(resp.Rooms.Join); got != rooms {
			return nil, fmt.Errorf("initial sync has %d joined rooms; want %d", got, rooms)
		}
	}
	slices.Sort(times)
	r["median_ms"] = round(float64(times[1].Microseconds()) / 1000)
	return r, nil
}

// RunIdle parks `clients` long-polling /sync requests and measures the server's
// memory per parked client.
func RunIdle(ctx context.Context, c Config, clients int) (Result, error) {
	r := Result{"scenario": "idle_sync", "clients": clients}
	if c.Proc == nil {
		return nil, fmt.Errorf("idle_sync needs the server's pid")
	}
	users, _, err := c.register(ctx, clients, 8, "idle")
	if err != nil {
		return nil, err
	}
	sinces := make([]string, clients)
	if err := parallel(clients, 8, func(i int) error {
		resp, err := users[i].Sync(ctx, "", 0, "")
		sinces[i] = resp.NextBatch
		return err
	}); err != nil {
		return nil, err
	}
	before, err := c.Proc.QuietRSSMiB()
	if err != nil {
		return nil, err
	}
	pollCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	for i, u := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = u.Sync(pollCtx, sinces[i], 2*time.Minute, "")
		}()
	}
	time.Sleep(3 * time.Second) // every poll parked
	after, err := c.Proc.StableRSSMiB(30 * time.Second)
	if err != nil {
		return nil, err
	}
	stop()
	wg.Wait()
	r["rss_before_mib"] = round(before)
	r["rss_after_mib"] = round(after)
	r["kib_per_client"] = round((after - before) * 1024 / float64(clients))
	return r, nil
}

// Idle measures a freshly started server's resident memory.
func Idle(c Config) (Result, error) {
	r := Result{"scenario": "idle"}
	if c.Proc == nil {
		return nil, fmt.Errorf("idle needs the server's pid")
	}
	if _, err := c.Proc.SettledCPU(30 * time.Second); err != nil {
		return nil, err
	}
	rss, err := c.Proc.RSSMiB()
	if err != nil {
		return nil, err
	}
	r["rss_mib"] = round(rss)
	return r, nil
}
