//go:build linux

package latencylab

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ProfileConfig sizes the profile runs: one with counters, one under strace.
type ProfileConfig struct {
	Streams, Frames int
}

// profiledPaths are the proxies compared per frame: ours and the peers.
var profiledPaths = []string{"direct", "tcp", "nginx", "haproxy"}

// Profile is where a proxy spends its time per frame round trip (client to
// back end and back: two reads and two writes at the least).
type Profile struct {
	Path      string `json:"path"`
	Frames    int    `json:"frames"`
	Processes int    `json:"processes"`
	Threads   int    `json:"threads"`
	// CPUPerFrame is user+system CPU, from /proc; UserShare the part of
	// it spent in user space (the proxy's own code, not the kernel's
	// sockets).
	CPUPerFrame time.Duration `json:"cpu_per_frame_ns"`
	UserShare   float64       `json:"user_share"`
	// Wakeups are voluntary context switches: a thread slept and was woken.
	WakeupsPerFrame     float64 `json:"wakeups_per_frame"`
	InvoluntaryPerFrame float64 `json:"involuntary_switches_per_frame"`
	// SyscallsPerFrame is from perf's raw_syscalls tracepoint, where perf
	// works; MigrationsPerFrame too.
	SyscallsPerFrame   float64 `json:"syscalls_per_frame,omitempty"`
	MigrationsPerFrame float64 `json:"cpu_migrations_per_frame,omitempty"`
	// Syscalls is strace -c -f's table, per frame, busiest first.
	Syscalls []SyscallCount `json:"syscalls,omitempty"`
	Note     string         `json:"note,omitempty"`
}

// SyscallCount is one row of strace -c.
type SyscallCount struct {
	Name     string  `json:"name"`
	PerFrame float64 `json:"per_frame"`
	// ErrorsPerFrame are failed calls, such as reads that found no data.
	ErrorsPerFrame float64 `json:"errors_per_frame"`
}

func (l *lab) profiles(runners []pathRunner) []*Profile {
	var out []*Profile
	for _, r := range runners {
		if r.procs == nil || !slices.Contains(profiledPaths, r.name) {
			continue
		}
		fmt.Fprintf(l.log, ">> profile %s\n", r.name)
		out = append(out, l.profile(r, true))
	}
	return out
}

func (l *lab) profile(r pathRunner, withStrace bool) *Profile {
	pc := l.cfg.Profile
	pids := r.procs.PIDs()
	p := &Profile{Path: r.name, Processes: len(pids), Threads: threadCount(r.procs)}
	var notes []string

	// First run: /proc counters, and perf's where it works.
	perf, perfErr := l.startTracer("perf", func(out string) []string {
		return []string{"stat", "-o", out, "-x,", "-e", "raw_syscalls:sys_enter,context-switches,cpu-migrations,task-clock", "-p", joinInts(pids, ",")}
	})
	cpu0 := cpuSeconds(r.procs)
	user0, sys0 := userSystem(r.procs)
	vol0, invol0 := contextSwitches(r.procs)
	path := l.runSized(r, pc.Streams, pc.Frames)
	vol1, invol1 := contextSwitches(r.procs)
	if user1, sys1 := userSystem(r.procs); user1+sys1 > user0+sys0 {
		p.UserShare = (user1 - user0) / (user1 - user0 + sys1 - sys0)
	}
	frames := float64(max(path.Received, 1))
	p.Frames = path.Received
	p.CPUPerFrame = time.Duration((cpuSeconds(r.procs) - cpu0) / frames * float64(time.Second))
	p.WakeupsPerFrame = float64(vol1-vol0) / frames
	p.InvoluntaryPerFrame = float64(invol1-invol0) / frames
	if perfErr == nil {
		out, err := perf.stop()
		if counts, perr := parsePerfStat(out); err == nil && perr == nil && counts["raw_syscalls:sys_enter"] > 0 {
			p.SyscallsPerFrame = counts["raw_syscalls:sys_enter"] / frames
			p.MigrationsPerFrame = counts["cpu-migrations"] / frames
		} else {
			notes = append(notes, "perf stat gave no counts on this kernel")
		}
	} else {
		notes = append(notes, perfErr.Error())
	}

	// Second run under strace, which slows the proxy: counts, not times.
	if !withStrace {
		p.Note = strings.Join(notes, "; ")
		return p
	}
	strace := func(out string) []string {
		args := []string{"-o", out, "-c", "-f"}
		for _, pid := range pids {
			args = append(args, "-p", strconv.Itoa(pid))
		}
		return args
	}
	if st, err := l.startTracer("strace", strace); err == nil {
		traced := l.runSized(r, pc.Streams, pc.Frames)
		out, err := st.stop()
		if rows, perr := parseStraceC(out, float64(max(traced.Received, 1))); err == nil && perr == nil {
			p.Syscalls = rows
		} else {
			notes = append(notes, fmt.Sprintf("strace: %v %v", err, perr))
		}
	} else {
		notes = append(notes, err.Error())
	}
	p.Note = strings.Join(notes, "; ")
	return p
}

// tracer is perf or strace attached to the proxy for one run.
type tracer struct {
	cmd *exec.Cmd
	out string
}

// startTracer runs tool with its summary written to a file, and gives it
// a moment to attach to every thread before the run starts.
func (l *lab) startTracer(tool string, args func(out string) []string) (*tracer, error) {
	bin, err := exec.LookPath(tool)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed: run `make bench-tools`", tool)
	}
	out := filepath.Join(l.t.TempDir(), tool+".out")
	cmd := exec.Command(bin, args(out)...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", tool, err)
	}
	time.Sleep(300 * time.Millisecond)
	return &tracer{cmd: cmd, out: out}, nil
}

// stop interrupts the tracer, which then writes its summary, and reads it.
func (t *tracer) stop() (string, error) {
	t.cmd.Process.Signal(syscall.SIGINT)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- t.cmd.Wait() }()
	select {
	case <-done:
	case <-ctx.Done():
		t.cmd.Process.Kill()
		<-done
		return "", fmt.Errorf("%s did not stop", t.cmd.Path)
	}
	b, err := os.ReadFile(t.out)
	return string(b), err
}

// parsePerfStat reads perf stat -x, output: value,unit,event,...
func parsePerfStat(out string) (map[string]float64, error) {
	counts := map[string]float64{}
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		f := strings.Split(s.Text(), ",")
		if len(f) < 3 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			counts[f[2]] = v
		}
	}
	if len(counts) == 0 {
		return nil, fmt.Errorf("perf stat: no counters in %q", out)
	}
	return counts, nil
}

// parseStraceC reads strace -c's table (% time, seconds, usecs/call,
// calls, errors, syscall) into counts per frame, busiest first.
func parseStraceC(out string, frames float64) ([]SyscallCount, error) {
	var rows []SyscallCount
	s := bufio.NewScanner(strings.NewReader(out))
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 5 || f[len(f)-1] == "total" || f[len(f)-1] == "syscall" {
			continue
		}
		calls, err := strconv.ParseFloat(f[3], 64)
		if err != nil {
			continue
		}
		row := SyscallCount{Name: f[len(f)-1], PerFrame: calls / frames}
		if len(f) == 6 {
			errs, _ := strconv.ParseFloat(f[4], 64)
			row.ErrorsPerFrame = errs / frames
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("strace -c: no table in %q", out)
	}
	slices.SortStableFunc(rows, func(a, b SyscallCount) int {
		switch {
		case a.PerFrame > b.PerFrame:
			return -1
		case a.PerFrame < b.PerFrame:
			return 1
		}
		return 0
	})
	return rows, nil
}

func joinInts(v []int, sep string) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, sep)
}
