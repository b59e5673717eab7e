//go:build linux

// Command bench runs the latency lab and writes bench/results.md,
// bench/results.json and PNG plots. `make bench` runs it: by default the
// main table (every path's latency) and the handshake times, in a few
// minutes; -full runs every section of the lab.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/directpipe/directpipe/bench/latencylab"
)

// QuickSections and QuickRounds are the default run: the main table of
// every path's latency, the handshake times and the fleet section (about
// a minute: 1,000 simulated Envoys on replica processes). Two rounds of 8 paths at
// 10 s of frames each is under 3 minutes of streaming, a third of the
// full lab's rounds and none of its searches.
var QuickSections = []string{"paths", "handshakes", "fleet"}

const QuickRounds = 2

// shape gives the quick run its sections and rounds, unless the command
// line named them.
func shape(quick bool, set map[string]bool, sections string, rounds int) (string, int) {
	if !quick {
		return sections, rounds
	}
	if !set["sections"] {
		sections = strings.Join(QuickSections, ",")
	}
	if !set["rounds"] {
		rounds = QuickRounds
	}
	return sections, rounds
}

// progress prefixes every progress line with the time since the start,
// so that a long run shows it is moving and how far it got.
type progress struct {
	w     io.Writer
	start time.Time
	mid   bool // inside a line: the prefix was written
}

func (p *progress) Write(b []byte) (int, error) {
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if !p.mid {
			fmt.Fprintf(p.w, "[%6s] ", time.Since(p.start).Round(time.Second))
		}
		if _, err := p.w.Write(line); err != nil {
			return 0, err
		}
		p.mid = line[len(line)-1] != '\n'
	}
	return len(b), nil
}

func main() {
	cfg := latencylab.Default()
	out := flag.String("out", "bench", "output directory")
	tiny := flag.Bool("tiny", false, "a seconds-long run that only proves the lab works")
	full := flag.Bool("full", false, "the whole lab: every section ("+strings.Join(latencylab.Sections, ",")+") and "+fmt.Sprint(cfg.Rounds)+" rounds (about 16 minutes on 2 cores)")
	streams := flag.Int("streams", cfg.Streams, "concurrent streams per path")
	frames := flag.Int("frames", cfg.Frames, "frames per stream")
	interval := flag.Duration("interval", cfg.Interval, "time between frames (20ms is real time)")
	handshakes := flag.Int("handshakes", cfg.Handshakes, "handshakes per auth mode")
	memory := flag.String("memory", "", "only measure Envoy's memory, plain and with the module, at these worker counts (e.g. 1,2,4)")
	workers := flag.Int("workers", cfg.Workers, "workers of every proxy (Envoy concurrency, nginx workers, HAProxy threads)")
	placement := flag.String("placement", cfg.Placement, "core layout: split (probe and back end on CPU 0, proxies on the rest), one (all on CPU 0) or shared (unpinned)")
	capMax := flag.Int("capacity-max", cfg.Capacity.Max, "most concurrent streams the capacity search tries")
	stormClients := flag.Int("storm-clients", cfg.Storm.Clients, "clients cut at once in the reconnect storm")
	sections := flag.String("sections", "", "only these parts of the run, comma-separated: "+strings.Join(latencylab.Sections, ","))
	paths := flag.String("paths", "", "only these paths (in paths, capacity, profile and storm), comma-separated: "+strings.Join(latencylab.PathNames(), ","))
	tunings := flag.String("tunings", "", "only these Envoy settings (beside the baseline) in the tunings section, comma-separated: "+strings.Join(latencylab.TuningNames(), ","))
	rounds := flag.Int("rounds", cfg.Rounds, "rotated rounds of every path")
	pushChanges := flag.Int("push-changes", cfg.Push.Changes, "changes timed to the ACK in each row of the push section")
	pushNodes := flag.Int("push-nodes", cfg.Push.Nodes, "simulated xDS nodes beside the Envoy in the push section's many-nodes row")
	fleetNodes := flag.Int("fleet-nodes", cfg.Fleet.Nodes, "simulated Envoys in the fleet section")
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	quick := !*full && !*tiny && *memory == ""
	*sections, *rounds = shape(quick, set, *sections, *rounds)
	sel, err := latencylab.ParseSelection(*sections, *paths, *tunings)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if *memory != "" {
		os.Exit(measureMemory(*memory))
	}
	if *tiny {
		cfg = latencylab.Tiny()
	} else {
		cfg.Streams, cfg.Frames, cfg.Interval, cfg.Handshakes = *streams, *frames, *interval, *handshakes
		cfg.Capacity.Max, cfg.Storm.Clients, cfg.Rounds = *capMax, *stormClients, *rounds
		cfg.Push.Changes, cfg.Push.Nodes = *pushChanges, *pushNodes
		cfg.Fleet.Nodes = *fleetNodes
	}
	cfg.Select = sel
	cfg.Workers, cfg.Placement = *workers, *placement
	start := time.Now()
	cfg.Log = &progress{w: os.Stderr, start: start}
	if quick && !set["sections"] {
		fmt.Fprintf(os.Stderr, ">> the quick lab: sections %s, %d rounds; -full (make bench BENCH_FULL=1) runs all of it\n", *sections, *rounds)
	}
	run := newRunner()
	run.stopOnSignal()
	defer run.cleanup()
	rep, err := latencylab.Run(run, cfg)
	if err == nil && !run.Failed() {
		// The tables first: a failure writing files must not lose a run.
		fmt.Print(rep.Markdown())
		err = rep.WriteOutputs(*out)
	}
	if err != nil || run.Failed() {
		fmt.Fprintln(os.Stderr, "bench:", err)
		run.cleanup()
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, ">> wrote %s/results.md, results.json, latency_cdf.png, handshake.png in %v\n", *out, time.Since(start).Round(time.Second))
}
