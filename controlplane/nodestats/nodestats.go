// Package nodestats receives the stats Envoys stream to the control plane
// (Envoy's metrics service sink, which the directpipe bootstrap turns on)
// and keeps the few the control plane acts on: how many connections each
// listener of each node holds now, so that a change that would drain a
// listener can say how many calls it would cut.
package nodestats

import (
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	"google.golang.org/grpc"
)

const (
	// maxNodes and maxListeners bound what a client can make the store
	// hold; past them, new entries are dropped.
	maxNodes     = 10_000
	maxListeners = 1_000
	// stale is how long a node's numbers stay credible without an update
	// (Envoy flushes stats every 5 seconds by default).
	stale = time.Minute
)

// Store implements Envoy's MetricsService and keeps, per node, the active
// connection count of each listener.
type Store struct {
	metricsv3.UnimplementedMetricsServiceServer

	mu    sync.Mutex
	nodes map[string]*node
	now   func() time.Time
}

type node struct {
	at     time.Time
	active map[string]int64 // by listener stat prefix, e.g. 127.0.0.1_10000
}

// New returns an empty store.
func New() *Store { return &Store{nodes: map[string]*node{}, now: time.Now} }

// Register adds the metrics service to a gRPC server (the xDS one: Envoy
// reaches it through its xDS cluster).
func (s *Store) Register(g *grpc.Server) { metricsv3.RegisterMetricsServiceServer(g, s) }

// StreamMetrics reads one Envoy's stream; the node is named in the first
// message only. Its numbers are dropped when the stream ends.
func (s *Store) StreamMetrics(stream grpc.ClientStreamingServer[metricsv3.StreamMetricsMessage, metricsv3.StreamMetricsResponse]) error {
	var id string
	defer func() {
		if id != "" {
			s.mu.Lock()
			delete(s.nodes, id)
			s.mu.Unlock()
		}
	}()
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&metricsv3.StreamMetricsResponse{})
		}
		if err != nil {
			return err
		}
		if n := msg.GetIdentifier().GetNode().GetId(); n != "" && id == "" {
			id = n
		}
		if id == "" {
			continue
		}
		s.record(id, msg)
	}
}

const (
	prefix = "listener."
	suffix = ".downstream_cx_active"
)

func (s *Store) record(id string, msg *metricsv3.StreamMetricsMessage) {
	found := map[string]int64{}
	for _, f := range msg.GetEnvoyMetrics() {
		name := f.GetName()
		if !strings.HasPrefix(name, prefix) || !strings.HasSuffix(name, suffix) || len(found) >= maxListeners {
			continue
		}
		listener := strings.TrimSuffix(strings.TrimPrefix(name, prefix), suffix)
		// Per-worker copies (listener.X.worker_0.downstream_cx_active) are
		// parts of the total.
		if strings.Contains(listener, ".worker_") {
			continue
		}
		for _, m := range f.GetMetric() {
			found[listener] = int64(m.GetGauge().GetValue())
		}
	}
	if len(found) == 0 {
		return // a batch without listener gauges
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.nodes[id]
	if !ok {
		if len(s.nodes) >= maxNodes {
			return
		}
		n = &node{active: map[string]int64{}}
		s.nodes[id] = n
	}
	n.at = s.now()
	for k, v := range found {
		if _, ok := n.active[k]; ok || len(n.active) < maxListeners {
			n.active[k] = v
		}
	}
}

// ActiveConnections returns, for every node that reported recently, the
// connections held now by the listener bound to address (ip:port).
func (s *Store) ActiveConnections(address string) map[string]int64 {
	key := StatPrefix(address)
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int64{}
	for id, n := range s.nodes {
		if v, ok := n.active[key]; ok && s.now().Sub(n.at) < stale {
			out[id] = v
		}
	}
	return out
}

// StatPrefix is how Envoy names a listener in its stats when the listener
// sets no stat_prefix: its address with every ':' as '_'.
func StatPrefix(address string) string { return strings.ReplaceAll(address, ":", "_") }
