//go:build linux

package main

import (
	"fmt"
	"os"
)

// runner gives the lab what a test would: temporary directories, cleanups
// and failure reporting, for a program that is not a test.
type runner struct {
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
	r.dirs = append(r.dirs, d)
	return d
}

func (r *runner) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }

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
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
	for _, d := range r.dirs {
		os.RemoveAll(d)
	}
	r.dirs = nil
}
