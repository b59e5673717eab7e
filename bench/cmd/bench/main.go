// Command bench runs the latency lab and writes bench/results.md,
// bench/results.json and PNG plots. `make bench` runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/directpipe/directpipe/bench/latencylab"
)

func main() {
	cfg := latencylab.Default()
	out := flag.String("out", "bench", "output directory")
	tiny := flag.Bool("tiny", false, "a seconds-long run that only proves the lab works")
	streams := flag.Int("streams", cfg.Streams, "concurrent streams per path")
	frames := flag.Int("frames", cfg.Frames, "frames per stream")
	interval := flag.Duration("interval", cfg.Interval, "time between frames (20ms is real time)")
	handshakes := flag.Int("handshakes", cfg.Handshakes, "handshakes per auth mode")
	memory := flag.String("memory", "", "only measure Envoy's memory, plain and with the module, at these worker counts (e.g. 1,2,4)")
	flag.Parse()
	if *memory != "" {
		os.Exit(measureMemory(*memory))
	}
	if *tiny {
		cfg = latencylab.Tiny()
	} else {
		cfg.Streams, cfg.Frames, cfg.Interval, cfg.Handshakes = *streams, *frames, *interval, *handshakes
	}
	cfg.Log = os.Stderr
	run := newRunner()
	defer run.cleanup()
	start := time.Now()
	rep, err := latencylab.Run(run, cfg)
	if err == nil && !run.Failed() {
		err = rep.WriteOutputs(*out)
	}
	if err != nil || run.Failed() {
		fmt.Fprintln(os.Stderr, "bench:", err)
		run.cleanup()
		os.Exit(1)
	}
	fmt.Print(rep.Markdown())
	fmt.Fprintf(os.Stderr, ">> wrote %s/results.md, results.json, latency_cdf.png, handshake.png in %v\n", *out, time.Since(start).Round(time.Second))
}
