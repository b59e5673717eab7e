//go:build linux

package e2e

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// fleetNodes is how many simulated Envoys the fleet-scale tests run:
// 1,000 by default (about 25 s and 12 s on two cores, most of it the
// replicas admitting new streams at their rate); DIRECTPIPE_FLEET_NODES
// sets another count.
func fleetNodes(t *testing.T) int {
	t.Helper()
	v := os.Getenv("DIRECTPIPE_FLEET_NODES")
	if v == "" {
		return 1000
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 3 {
		t.Fatalf("DIRECTPIPE_FLEET_NODES=%q: want a number of nodes, at least 3", v)
	}
	return n
}

// TestFleetChangeAckedByEveryNode: one replica process serves hundreds of
// simulated Envoys over mutual TLS; each policy change is ACKed by every
// one of them. The times and the memory each node costs are logged, not
// asserted: speed is `make bench`'s.
func TestFleetChangeAckedByEveryNode(t *testing.T) {
	nodes := fleetNodes(t)
	res, err := testkit.MeasureFleetPush(t, testkit.FleetScaleOptions{
		Nodes: nodes, Policies: testkit.FleetPolicies(t), Changes: 3, Timeout: 3 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Acks) != 3*nodes {
		t.Fatalf("%d ACKs of 3 changes by %d nodes", len(res.Acks), nodes)
	}
	s := voiceprobe.Summarize(res.Acks)
	per := res.PerNode()
	t.Logf("%d nodes synced in %v; apply to ACK over 3 changes: p50 %v p99 %v max %v; per node: heap %d KiB, RSS %d KiB, %d goroutines",
		nodes, res.Connect.Round(time.Millisecond), s.P50, s.P99, s.Max, per.HeapBytes>>10, per.RSSBytes>>10, per.Goroutines)
}

// TestFleetReplicaKilledNodesResync: three replica processes on etcd
// share the simulated fleet; one is killed with SIGKILL, and every node it
// served reconnects, after a jittered back-off, to a survivor, which
// reports it SYNCED.
func TestFleetReplicaKilledNodesResync(t *testing.T) {
	nodes := fleetNodes(t)
	res, err := testkit.MeasureFailover(t, testkit.FleetScaleOptions{
		Nodes: nodes, Policies: testkit.FleetPolicies(t), Timeout: 3 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Moved < nodes/3-nodes/10 || len(res.Resync) != res.Moved {
		t.Fatalf("%d of %d nodes were on the killed replica, %d resynced", res.Moved, nodes, len(res.Resync))
	}
	s := voiceprobe.Summarize(res.Resync)
	t.Logf("%d of %d nodes moved after the kill: SYNCED on a survivor p50 %v p99 %v max %v after it; the survivors' status showed all after %v; %d streams refused over the rate and retried",
		res.Moved, nodes, s.P50, s.P99, s.Max, res.Status.Round(time.Millisecond), res.Refused)
}
