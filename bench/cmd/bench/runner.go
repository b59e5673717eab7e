//go:build linux

package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// runner gives the lab what a test would: temporary directories, cleanups
// and failure reporting, for a program that is not a test.
type runner struct {
	// mu guards dirs and cleanups: an interrupt cleans up from another
	// goroutine while the lab is still adding to them.
	mu       sync.Mutex
	dirs     []string
	cleanups []func()
	failed   bool
}

func newRunner() *runner { return &runner{} }

func (r *runner) Helper()      {}
func (r *runner) Name() string { return "bench" }
func (r *runner) Failed() bool { return r.failed }

func (r *runner) TempDir() string {
	d, err := os.MkdirTemp("", "directpipe-bench-")
	if err != nil {
		r.Fatal(err)
	}
	r.mu.Lock()
	r.dirs = append(r.dirs, d)
	r.mu.Unlock()
	return d
}

func (r *runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}

func (r *runner) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (r *runner) Errorf(format string, args ...any) {
	r.failed = true
	r.Logf(format, args...)
}

// Fatal stops the program after cleaning up, as a test would stop.
func (r *runner) Fatal(args ...any) {
	r.failed = true
	fmt.Fprintln(os.Stderr, append([]any{"bench:"}, args...)...)
	r.cleanup()
	os.Exit(1)
}

func (r *runner) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }

func (r *runner) cleanup() {
	r.mu.Lock()
	cleanups, dirs := r.cleanups, r.dirs
	r.cleanups, r.dirs = nil, nil
	r.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// stopOnSignal cleans up and exits on Ctrl-C or SIGTERM. The peers run in
// process groups of their own (so that stopping one stops its workers),
// which a terminal's Ctrl-C does not reach: without this an interrupted
// run left nginx and HAProxy running.
func (r *runner) stopOnSignal() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, ">> %v: stopping what the lab started\n", sig)
		r.cleanup()
		os.Exit(130)
	}()
}
