// Package streams counts live streams across a fleet of Envoys. Envoys
// report load to the control plane through Envoy's load reporting service
// (LRS, cluster_manager.load_stats_config in the bootstrap); asked for
// endpoint granularity, each report holds every endpoint's requests in
// progress, and a live WebSocket or tcp_proxy connection is one request in
// progress for its whole life. The store keeps the latest report of each
// node and adds them up: live streams per back end, endpoint and node.
package streams

import (
	"errors"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lrsv3 "github.com/envoyproxy/go-control-plane/envoy/service/load_stats/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"
)

const (
	// DefaultInterval is how often Envoys report: a drain sees its count
	// fall within a few seconds, and a fleet of thousands of Envoys sends
	// the control plane a few hundred small messages a second.
	DefaultInterval = 2 * time.Second
	// maxNodes, maxClusters and maxEndpoints bound what one client, or a
	// fleet, can make the store hold; past them, entries are dropped.
	maxNodes     = 10_000
	maxClusters  = 1_000
	maxEndpoints = 10_000
	// staleAfter is how long a node's report stays credible without the
	// next one (a few missed intervals).
	staleAfter = 5 * DefaultInterval
)

// RouteSeparator joins back end and route in the name of a route's own
// cluster (translate.RouteClusterSeparator; repeated here so that this
// package does not import translate).
const RouteSeparator = "~"

// Count is the live streams of one endpoint, as one node sees them.
type Count struct {
	Node     string
	Backend  string
	Route    string // set when the route has a cluster of its own
	Endpoint string // host:port
	Live     uint64
}

// Store implements Envoy's LoadReportingService and keeps each node's
// latest report.
type Store struct {
	lrsv3.UnimplementedLoadReportingServiceServer

	interval time.Duration
	now      func() time.Time

	mu    sync.Mutex
	nodes map[string]*report
}

type report struct {
	at     time.Time
	counts []Count
}

// New returns an empty store that asks Envoys to report every interval
// (DefaultInterval when zero).
func New(interval time.Duration) *Store {
	if interval <= 0 {
		interval = DefaultInterval
	}
	return &Store{interval: interval, now: time.Now, nodes: map[string]*report{}}
}

// Register adds the load reporting service to a gRPC server (the xDS one:
// Envoy reaches it through its xDS cluster).
func (s *Store) Register(g *grpc.Server) { lrsv3.RegisterLoadReportingServiceServer(g, s) }

// StreamLoadStats answers an Envoy's first message with what to report
// (every cluster, per endpoint, every interval), then records each report.
// A node's counts are dropped when its stream ends: an Envoy that is gone
// holds no streams, and one that reconnects reports again.
func (s *Store) StreamLoadStats(stream grpc.BidiStreamingServer[lrsv3.LoadStatsRequest, lrsv3.LoadStatsResponse]) error {
	var id string
	defer func() {
		if id != "" {
			s.mu.Lock()
			delete(s.nodes, id)
			s.mu.Unlock()
		}
	}()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if id == "" {
			if id = req.GetNode().GetId(); id == "" {
				continue
			}
			if err := stream.Send(&lrsv3.LoadStatsResponse{
				SendAllClusters:           true,
				LoadReportingInterval:     durationpb.New(s.interval),
				ReportEndpointGranularity: true,
			}); err != nil {
				return err
			}
			// The first message carries no stats worth keeping yet, but
			// it makes the node known, with nothing live.
		}
		s.Record(id, req.GetClusterStats())
	}
}

// Record replaces what node reported last. Envoy leaves out endpoints, and
// clusters, that saw nothing in the interval, so what a report omits is 0.
func (s *Store) Record(node string, stats []*endpointv3.ClusterStats) {
	var counts []Count
	endpoints := 0
	for i, cs := range stats {
		if i >= maxClusters {
			break
		}
		backend, route, _ := strings.Cut(cs.GetClusterName(), RouteSeparator)
		if cs.GetClusterServiceName() != "" {
			backend = cs.GetClusterServiceName()
		}
		for _, loc := range cs.GetUpstreamLocalityStats() {
			for _, ep := range loc.GetUpstreamEndpointStats() {
				if endpoints >= maxEndpoints {
					break
				}
				endpoints++
				live := ep.GetTotalRequestsInProgress()
				if live == 0 {
					continue
				}
				counts = append(counts, Count{Node: node, Backend: backend, Route: route, Endpoint: address(ep), Live: live})
			}
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, known := s.nodes[node]; !known && len(s.nodes) >= maxNodes {
		return
	}
	s.nodes[node] = &report{at: s.now(), counts: counts}
}

func address(ep *endpointv3.UpstreamEndpointStats) string {
	sa := ep.GetAddress().GetSocketAddress()
	if sa == nil {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

// Counts returns the live streams every node reported, sorted by back
// end, route, endpoint and node. A node whose latest report is older than
// a few intervals counts for nothing: its stream to this control plane is
// stuck or it has moved to another replica, which reports it instead.
func (s *Store) Counts() []Count {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Count
	now := s.now()
	for _, r := range s.nodes {
		if now.Sub(r.at) > staleAfter {
			continue
		}
		out = append(out, r.counts...)
	}
	Sort(out)
	return out
}

// Nodes returns the nodes that reported recently.
func (s *Store) Nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	now := s.now()
	for id, r := range s.nodes {
		if now.Sub(r.at) <= staleAfter {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

// ReportedSince reports whether every node that reports has sent a report
// at or after t (true when none reports: nothing can hold a stream that
// load reports would show).
func (s *Store) ReportedSince(t time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for _, r := range s.nodes {
		if now.Sub(r.at) <= staleAfter && r.at.Before(t) {
			return false
		}
	}
	return true
}

// Interval is how often Envoys are asked to report.
func (s *Store) Interval() time.Duration { return s.interval }

// Sort orders counts by back end, route, endpoint and node.
func Sort(c []Count) {
	slices.SortFunc(c, func(a, b Count) int {
		return strings.Compare(a.Backend+"\x00"+a.Route+"\x00"+a.Endpoint+"\x00"+a.Node,
			b.Backend+"\x00"+b.Route+"\x00"+b.Endpoint+"\x00"+b.Node)
	})
}

// Live adds up the streams counts hold on one endpoint of a back end, over
// every node and route.
func Live(counts []Count, backend, endpoint string) uint64 {
	var n uint64
	for _, c := range counts {
		if c.Backend == backend && c.Endpoint == endpoint {
			n += c.Live
		}
	}
	return n
}
