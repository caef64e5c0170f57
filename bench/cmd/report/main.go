// Command report turns the JSON lines of bench/compare.sh into the side-by-side
// Markdown table of bench/RESULTS.md: each metric for Dendrite and Hongyan on each
// database kind, with Hongyan's advantage and the goal it is measured against.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
	"time"
)

// metric is one row: a scenario's value, whether more is better, and the goal as a
// factor of Hongyan's advantage over Dendrite (0: no goal).
type metric struct {
	name, scenario, key string
	higherBetter        bool
	goal                float64
	goalText            string
}

var metrics = []metric{
	{"start-up (ms)", "startup", "ms", false, 0, ""},
	{"idle RSS (MiB)", "idle", "rss_mib", false, 1, "≤ 1×"},
	{"register (users/s)", "register", "users_per_s", true, 0, ""},
	{"send throughput (msgs/s)", "send", "msgs_per_s", true, 10, "≥ 10×"},
	{"send latency p99 (ms)", "send", "p99_ms", false, 0, ""},
	{"send CPU per message (ms)", "send", "cpu_ms_per_msg", false, 10, "≤ 1/10"},
	{"fan-out delivery p50 (ms)", "fanout", "p50_ms", false, 0, ""},
	{"fan-out delivery p99 (ms)", "fanout", "p99_ms", false, 10, "≤ 1/10"},
	{"fan-out delivered share", "fanout", "delivered_share", true, 0, ""},
	{"fan-out CPU per message (ms)", "fanout", "cpu_ms_per_msg", false, 10, "≤ 1/10"},
	{"fan-out peak RSS (MiB)", "fanout", "peak_rss_mib", false, 0, ""},
	{"room creation (rooms/s)", "rooms", "creates_per_s", true, 0, ""},
	{"joins (joins/s)", "rooms", "joins_per_s", true, 0, ""},
	{"initial sync (ms)", "initial_sync", "median_ms", false, 3, "≤ 1/3"},
	{"idle long-poll memory (KiB/client)", "idle_sync", "kib_per_client", false, 0, ""},
}

func main() {
	machine := flag.String("machine", "", "the machine, for the heading")
	settings := flag.String("settings", "", "the harness settings, for the heading")
	insert := flag.String("insert", "", "a RESULTS.md to insert the section into (after its introduction); stdout if empty")
	flag.Parse()

	values := map[string]map[string]map[string]float64{} // label → scenario → key → value
	var failures []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r map[string]any
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		label, _ := r["label"].(string)
		scenario, _ := r["scenario"].(string)
		if e, ok := r["error"].(string); ok {
			failures = append(failures, fmt.Sprintf("%s %s: %s", label, scenario, e))
			continue
		}
		if values[label] == nil {
			values[label] = map[string]map[string]float64{}
		}
		if values[label][scenario] == nil {
			values[label][scenario] = map[string]float64{}
		}
		for k, v := range r {
			if f, ok := v.(float64); ok {
				values[label][scenario][k] = f
			}
		}
	}
	var kinds []string
	for label := range values {
		if k, ok := strings.CutPrefix(label, "hongyan-"); ok {
			kinds = append(kinds, k)
		}
	}
	slices.Sort(kinds)
	slices.Reverse(kinds) // sqlite before postgres

	var b strings.Builder
	fmt.Fprintf(&b, "## %s — side by side with Dendrite v0.13.8\n\n", time.Now().Format("2006-01-02"))
	fmt.Fprintf(&b, "`bench/compare.sh` on %s; harness settings: %s. Both servers fresh, rate limits off, logs at warn,\n", *machine, *settings)
	b.WriteString("one after the other on the same machine; the harness (`bench/cmd/loadgen`) runs on the same machine.\n")
	b.WriteString("Advantage is how many times better Hongyan is (above 1: Hongyan better). CPU is the server process's\n")
	b.WriteString("user+system time from /proc, including work it does after the last response.\n\n")
	b.WriteString("| metric |")
	for _, k := range kinds {
		fmt.Fprintf(&b, " Dendrite %s | Hongyan %s | advantage |", k, k)
	}
	b.WriteString(" goal |\n|---|")
	for range kinds {
		b.WriteString("---|---|---|")
	}
	b.WriteString("---|\n")
	for _, m := range metrics {
		fmt.Fprintf(&b, "| %s |", m.name)
		for _, k := range kinds {
			d, dok := values["dendrite-"+k][m.scenario][m.key]
			h, hok := values["hongyan-"+k][m.scenario][m.key]
			adv := "–"
			if dok && hok && d > 0 && h > 0 {
				a := d / h
				if m.higherBetter {
					a = h / d
				}
				adv = fmt.Sprintf("%.2f×", a)
				if m.goal > 0 {
					if a >= m.goal {
						adv += " ✓"
					} else {
						adv += " ✗"
					}
				}
			}
			fmt.Fprintf(&b, " %s | %s | %s |", show(d, dok), show(h, hok), adv)
		}
		fmt.Fprintf(&b, " %s |\n", m.goalText)
	}
	for _, f := range failures {
		fmt.Fprintf(&b, "\nFailed: %s\n", f)
	}
	b.WriteString("\n")

	if *insert == "" {
		fmt.Print(b.String())
		return
	}
	old, err := os.ReadFile(*insert)
	if err != nil {
		log.Fatal(err)
	}
	// Newest first: the section goes before the first existing one.
	text := string(old)
	i := strings.Index(text, "\n## ")
	if i < 0 {
		i = len(text)
	} else {
		i++
	}
	if err := os.WriteFile(*insert, []byte(text[:i]+b.String()+text[i:]), 0o644); err != nil {
		log.Fatal(err)
	}
}

func show(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
