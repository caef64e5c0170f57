package loadgen

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Process reads a server process's CPU time and memory from /proc, so the harness
// measures the server it drives without any help from it.
type Process struct{ PID int }

// clockTicks is USER_HZ, which is 100 on every Linux this runs on.
const clockTicks = 100

// CPUSeconds is the user and system CPU time the process has used.
func (p Process) CPUSeconds() (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.PID))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; the fields after it are fixed.
	s := string(data)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", p.PID)
	}
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / clockTicks, nil
}

// RSSMiB is the process's resident set size.
func (p Process) RSSMiB() (float64, error) {
	return p.status("VmRSS:")
}

// PeakRSSMiB is the highest resident set size the process has had.
func (p Process) PeakRSSMiB() (float64, error) {
	return p.status("VmHWM:")
}

func (p Process) status(field string) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, p.PID)
}

// SettledCPU waits until the process stops using CPU (work queued behind the last
// response counts too, as the harness's goal demands), then returns its CPU time.
// It gives up after max.
func (p Process) SettledCPU(max time.Duration) (float64, error) {
	deadline := time.Now().Add(max)
	last, err := p.CPUSeconds()
	if err != nil {
		return 0, err
	}
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
		now, err := p.CPUSeconds()
		if err != nil {
			return 0, err
		}
		if now-last < 0.02 { // under 4% of a core: idle
			return now, nil
		}
		last = now
	}
	return last, nil
}

// StableRSSMiB waits until the resident set size stops moving (three readings a
// second apart within 1%) and returns it; after max it returns the last reading.
func (p Process) StableRSSMiB(max time.Duration) (float64, error) {
	deadline := time.Now().Add(max)
	last, err := p.RSSMiB()
	if err != nil {
		return 0, err
	}
	steady := 0
	for steady < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		now, err := p.RSSMiB()
		if err != nil {
			return 0, err
		}
		if d := now - last; d < last/100 && -d < last/100 {
			steady++
		} else {
			steady = 0
		}
		last = now
	}
	return last, nil
}

// QuietRSSMiB waits for the process to stop using CPU after a setup, then for its
// resident set to stop moving (the runtime returns freed memory to the OS
// gradually; measuring before would make what follows look free), and returns it.
func (p Process) QuietRSSMiB() (float64, error) {
	if _, err := p.SettledCPU(30 * time.Second); err != nil {
		return 0, err
	}
	return p.StableRSSMiB(30 * time.Second)
}
