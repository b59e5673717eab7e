//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/directpipe/directpipe/bench/latencylab"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// measureMemory prints Envoy's memory table for a comma-separated list of
// worker counts and returns the exit code.
func measureMemory(list string) int {
	var workers []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: -memory: %q is not a worker count\n", f)
			return 2
		}
		workers = append(workers, n)
	}
	run := newRunner()
	defer run.cleanup()
	rows, err := latencylab.MeasureMemory(run, testkit.StartBackend(run), workers)
	if err != nil || run.Failed() {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	fmt.Print(latencylab.MemoryMarkdown(rows))
	return 0
}
