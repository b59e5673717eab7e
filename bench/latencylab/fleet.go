//go:build linux

package latencylab

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// FleetConfig sizes the fleet section: replica processes serving
// simulated Envoys (ADS clients over mutual TLS that ACK everything).
type FleetConfig struct {
	// Nodes simulated Envoys; one replica serves them all, then three
	// replicas on etcd share them and one is killed.
	Nodes int
	// Changes are timed from the apply to every node's ACK, both with
	// one node (the baseline) and with Nodes.
	Changes int
}

// Fleet is the fleet section's result.
type Fleet struct {
	Nodes int `json:"nodes"`
	// Baseline is one node on one replica; Ack is Nodes on one replica:
	// each node's time from the apply until it ACKed, over every change.
	Baseline voiceprobe.Summary `json:"baseline_ack"`
	Ack      voiceprobe.Summary `json:"ack"`
	// Slowest is each change's last ACK with Nodes.
	Slowest voiceprobe.Summary `json:"slowest_ack"`
	// Connect is until every node first synced, through the replica's
	// rate of new streams.
	Connect time.Duration `json:"connect_ns"`
	// Idle and Loaded are the replica with no node and with Nodes.
	Idle    testkit.Memory `json:"idle"`
	Loaded  testkit.Memory `json:"loaded"`
	PerNode testkit.Memory `json:"per_node"`
	// Moved nodes were on the killed replica; Resync is each one's time
	// from the kill to SYNCED on a survivor, Status until the survivors'
	// admin API showed all of them SYNCED.
	Moved   int                `json:"moved"`
	Resync  voiceprobe.Summary `json:"resync"`
	Status  time.Duration      `json:"status_ns"`
	Refused int                `json:"refused"`
}

// fleetTimeout bounds every wait of the fleet section.
const fleetTimeout = 5 * time.Minute

// fleet measures the fleet section.
func (l *lab) fleet(cfg FleetConfig) (*Fleet, error) {
	policies := testkit.FleetPolicies(l.t)
	opts := testkit.FleetScaleOptions{Nodes: 1, Policies: policies, Changes: cfg.Changes, Timeout: fleetTimeout}
	fmt.Fprintf(l.log, ">> fleet: one replica, 1 node (baseline)\n")
	one, err := testkit.MeasureFleetPush(l.t, opts)
	if err != nil {
		return nil, fmt.Errorf("fleet baseline: %w", err)
	}
	opts.Nodes = cfg.Nodes
	fmt.Fprintf(l.log, ">> fleet: one replica, %d nodes\n", cfg.Nodes)
	many, err := testkit.MeasureFleetPush(l.t, opts)
	if err != nil {
		return nil, fmt.Errorf("fleet of %d: %w", cfg.Nodes, err)
	}
	fmt.Fprintf(l.log, ">> fleet: three replicas, %d nodes, one killed\n", cfg.Nodes)
	fo, err := testkit.MeasureFailover(l.t, opts)
	if err != nil {
		return nil, fmt.Errorf("fleet failover: %w", err)
	}
	f := &Fleet{
		Nodes: cfg.Nodes, Baseline: voiceprobe.Summarize(one.Acks), Ack: voiceprobe.Summarize(many.Acks),
		Slowest: voiceprobe.Summarize(many.Slowest), Connect: many.Connect,
		Idle: many.Idle, Loaded: many.Loaded, PerNode: many.PerNode(),
		Moved: fo.Moved, Resync: voiceprobe.Summarize(fo.Resync), Status: fo.Status, Refused: fo.Refused,
	}
	f.log(l.log)
	return f, nil
}

func (f *Fleet) log(w io.Writer) {
	fmt.Fprintf(w, ">> fleet: change to ACK by %d nodes p50 %v p99 %v max %v; %d KiB heap, %d KiB RSS per node; kill -9 to SYNCED on a survivor p99 %v max %v\n",
		f.Nodes, f.Ack.P50, f.Ack.P99, f.Ack.Max, f.PerNode.HeapBytes>>10, f.PerNode.RSSBytes>>10, f.Resync.P99, f.Resync.Max)
}

func kib(n int64) string { return fmt.Sprintf("%d", n>>10) }

// writeFleet renders the fleet section.
func (r *Report) writeFleet(b *strings.Builder) {
	f := r.Fleet
	if f == nil {
		return
	}
	fmt.Fprintf(b, "\n## Fleet\n\n")
	fmt.Fprintf(b, "Replica processes (`bin/directpipe`) serving simulated Envoys: ADS clients over mutual TLS, each with a certificate for its node id "+
		"and a connection of its own, that ACK everything. A policy change (one REST route added or removed, RDS only) is timed from the admin API call "+
		"to each node's ACK; the baseline is the same replica serving one node.\n\n")
	b.WriteString("| change to ACK | 1 node ms | " + fmt.Sprint(f.Nodes) + " nodes ms | ratio |\n|---|---|---|---|\n")
	for _, row := range []struct {
		name      string
		one, many time.Duration
	}{
		{"p50", f.Baseline.P50, f.Ack.P50}, {"p99", f.Baseline.P99, f.Ack.P99}, {"max", f.Baseline.Max, f.Ack.Max},
	} {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", row.name, ms(row.one), ms(row.many), ratio(float64(row.many), float64(row.one)))
	}
	fmt.Fprintf(b, "\n%d changes; each change's last ACK: p50 %s ms, max %s ms. Every node first synced in %v (the replica admits new streams at its rate).\n\n",
		f.Slowest.Count, ms(f.Slowest.P50), ms(f.Slowest.Max), f.Connect.Round(time.Millisecond))
	b.WriteString("| control-plane memory | no node KiB | " + fmt.Sprint(f.Nodes) + " nodes KiB | per node KiB |\n|---|---|---|---|\n")
	fmt.Fprintf(b, "| Go heap in use (lowest of 20 samples over 2 s; uncollected garbage included) | %s | %s | %s |\n", kib(f.Idle.HeapBytes), kib(f.Loaded.HeapBytes), kib(f.PerNode.HeapBytes))
	fmt.Fprintf(b, "| resident set | %s | %s | %s |\n", kib(f.Idle.RSSBytes), kib(f.Loaded.RSSBytes), kib(f.PerNode.RSSBytes))
	fmt.Fprintf(b, "| goroutines (a count, not KiB) | %d | %d | %d |\n", f.Idle.Goroutines, f.Loaded.Goroutines, f.PerNode.Goroutines)
	fmt.Fprintf(b, "\nThree replicas on etcd share the %d nodes; one is killed with SIGKILL. Its %d nodes reconnect to the survivors after a jittered back-off "+
		"(%d streams refused over a survivor's rate and retried): SYNCED on a survivor, from the kill, p50 %s ms, p99 %s ms, max %s ms; "+
		"the survivors' admin API showed all of them SYNCED after %s ms.\n",
		f.Nodes, f.Moved, f.Refused, ms(f.Resync.P50), ms(f.Resync.P99), ms(f.Resync.Max), ms(f.Status))
}
