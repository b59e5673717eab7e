//go:build linux

package latencylab

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// procs is whatever carries a path's frames, as processes the lab can
// charge CPU to, count threads of and pin: Envoy is one process, nginx a
// master and its workers.
type procs interface {
	PIDs() []int
}

// envoyProcs adapts a testkit Envoy.
type envoyProcs struct{ e *testkit.Envoy }

func (p envoyProcs) PIDs() []int { return []int{p.e.PID()} }

// onEnvoy is nil for a nil Envoy, so that a path without a proxy has no
// procs rather than a procs holding nothing.
func onEnvoy(e *testkit.Envoy) procs {
	if e == nil {
		return nil
	}
	return envoyProcs{e}
}

// cpuSeconds is the CPU time every thread of every process of p has used,
// from the scheduler's nanosecond counters (/proc's utime and stime count
// 10 ms ticks, too coarse for a few thousand frames).
func cpuSeconds(p procs) float64 {
	if p == nil {
		return 0
	}
	var ns int64
	for _, pid := range p.PIDs() {
		for _, tid := range tasks(pid) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, tid))
			if err != nil {
				continue
			}
			f := strings.Fields(string(b))
			if len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				ns += v
			}
		}
	}
	return float64(ns) / 1e9
}

// tasks lists the thread ids of a process.
func tasks(pid int) []int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var out []int
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out
}

// threadCount is the number of threads of every process of p.
func threadCount(p procs) int {
	n := 0
	for _, pid := range p.PIDs() {
		n += len(tasks(pid))
	}
	return n
}

// contextSwitches sums the voluntary (a thread slept: a wake-up follows)
// and involuntary switches of every thread of p, from /proc.
func contextSwitches(p procs) (voluntary, involuntary int64) {
	for _, pid := range p.PIDs() {
		for _, tid := range tasks(pid) {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				k, v, ok := strings.Cut(line, ":")
				if !ok {
					continue
				}
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				switch k {
				case "voluntary_ctxt_switches":
					voluntary += n
				case "nonvoluntary_ctxt_switches":
					involuntary += n
				}
			}
		}
	}
	return voluntary, involuntary
}

// children lists the processes whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// The parent is the second field after the command name, which
		// may itself hold spaces and parentheses.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// pin binds every thread of pid to cpus; threads started later inherit it
// from the thread that starts them.
func pin(pid int, cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	var set unix.CPUSet
	for _, c := range cpus {
		set.Set(c)
	}
	for _, tid := range tasks(pid) {
		if err := unix.SchedSetaffinity(tid, &set); err != nil {
			return fmt.Errorf("pin %d/%d to %v: %w", pid, tid, cpus, err)
		}
	}
	return nil
}

// pinAll pins every process of p (none when p is nil: a part of the lab
// that was not started).
func pinAll(p procs, cpus []int) error {
	if p == nil {
		return nil
	}
	for _, pid := range p.PIDs() {
		if err := pin(pid, cpus); err != nil {
			return err
		}
	}
	return nil
}

// cpuList renders cpus as taskset reads them.
func cpuList(cpus []int) string { return joinInts(cpus, ",") }

// userSystem splits the CPU time of p's processes, every thread included,
// into user space and kernel, from /proc in 10 ms ticks: enough over a few
// thousand frames to say which side a proxy spends its time on.
func userSystem(p procs) (user, system float64) {
	const ticks = 100 // USER_HZ
	for _, pid := range p.PIDs() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		k, _ := strconv.ParseFloat(f[12], 64)
		user += u / ticks
		system += k / ticks
	}
	return user, system
}
