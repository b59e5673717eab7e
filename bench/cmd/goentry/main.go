//go:build linux

// Command goentry measures what a call from a foreign thread into Go
// costs, the way Envoy's workers call the native filter: a C program
// starts threads that call an exported Go function of a c-shared
// library, back to back and then spaced out, and the command prints the
// latencies as a Markdown table.
//
// Spaced calls are the case that matters in Envoy, where a worker does
// its own work between two handshakes. Go's scheduler only notices a P
// (its slot for running Go code) being used when it schedules a
// goroutine on it, and a call from C schedules none. So 10 ms after a
// worker's P last saw one, the scheduler's monitor takes that P back at
// every chance it gets, every call from then on takes a P through the
// scheduler and wakes the monitor, and a call that runs longer than the
// monitor's tick is asked to yield. docs/filter.md ("Where a native
// handshake spends its time") reads the numbers.
//
// Usage: go run ./bench/cmd/goentry [-calls 2000] [-threads 2] [-gap 1ms] [-work 200]
//
// It needs the Go toolchain and a C compiler (cc), as the native build does.
package main

import (
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed lib.go.txt
var libSource []byte

//go:embed driver.c.txt
var driverSource []byte

// measurement is one run of the driver: each thread's p50, p90 and p99.
type measurement struct {
	name          string
	inGo          bool
	gap           time.Duration
	work          int
	p50, p90, p99 time.Duration
}

func main() {
	calls := flag.Int("calls", 2000, "calls per thread and case")
	threads := flag.Int("threads", 2, "calling threads, as Envoy's workers")
	gap := flag.Duration("gap", time.Millisecond, "pause between two calls of a thread in the spaced cases")
	work := flag.Int("work", 200, "SHA-256 blocks hashed per call in the working cases (about a cold handshake's Go work)")
	flag.Parse()

	dir, err := os.MkdirTemp("", "goentry-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	driver, err := build(dir)
	if err != nil {
		log.Fatal(err)
	}
	cases := []measurement{
		{name: "C function, back to back"},
		{name: "Go function, back to back", inGo: true},
		{name: "Go function, spaced", inGo: true, gap: *gap},
		{name: "Go function with work, back to back", inGo: true, work: *work},
		{name: "Go function with work, spaced", inGo: true, gap: *gap, work: *work},
	}
	for i := range cases {
		if err := run(driver, *threads, *calls, &cases[i]); err != nil {
			log.Fatal(err)
		}
	}
	report(os.Stdout, cases, *threads, *calls)
}

// build writes the library and the driver into dir and compiles them.
func build(dir string) (string, error) {
	// The library is a package of its own: cgo would compile a C file
	// lying beside it into it.
	if err := os.Mkdir(filepath.Join(dir, "lib"), 0o755); err != nil {
		return "", err
	}
	files := map[string][]byte{
		"lib/go.mod": []byte("module goentry\n\ngo 1.26\n"),
		"lib/lib.go": libSource,
		"driver.c":   driverSource,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", err
		}
	}
	steps := [][]string{
		{"go", "-C", "lib", "build", "-buildmode=c-shared", "-o", "../libgoentry.so", "."},
		{"cc", "-O2", "-o", "driver", "driver.c", "-L.", "-lgoentry", "-lpthread", "-Wl,-rpath," + dir},
	}
	for _, argv := range steps {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOWORK=off", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
		}
	}
	return filepath.Join(dir, "driver"), nil
}

// run measures one case and keeps the median, over the threads, of each
// percentile.
func run(driver string, threads, calls int, m *measurement) error {
	lang := "c"
	if m.inGo {
		lang = "go"
	}
	cmd := exec.Command(driver, lang, strconv.Itoa(threads), strconv.Itoa(calls),
		strconv.FormatInt(m.gap.Microseconds(), 10), strconv.Itoa(m.work))
	// As the native filter sets it: a P more than the threads calling in,
	// and one for Envoy's main thread (filter/native/procs.go).
	cmd.Env = append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(threads+2))
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w", m.name, err)
	}
	var per [3][]time.Duration
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return fmt.Errorf("%s: driver printed %q", m.name, line)
		}
		for i := range per {
			ns, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			per[i] = append(per[i], time.Duration(ns))
		}
	}
	m.p50, m.p90, m.p99 = median(per[0]), median(per[1]), median(per[2])
	return nil
}

func median(d []time.Duration) time.Duration {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

func report(w io.Writer, cases []measurement, threads, calls int) {
	fmt.Fprintf(w, "Calls into a c-shared Go library from %d C threads, %d calls each; GOMAXPROCS %d.\n\n", threads, calls, threads+2)
	fmt.Fprintln(w, "| Case | Pause between calls | p50 | p90 | p99 | p50 vs back to back |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for i, m := range cases {
		ratio := "–"
		if m.gap > 0 && i > 0 && cases[i-1].p50 > 0 {
			ratio = fmt.Sprintf("%.1f×", float64(m.p50)/float64(cases[i-1].p50))
		}
		pause := "none"
		if m.gap > 0 {
			pause = m.gap.String()
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", m.name, pause, m.p50, m.p90, m.p99, ratio)
	}
}
