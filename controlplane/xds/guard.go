package xds

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/controlplane/wirebound"
)

// Limits bound what xDS clients may make the control plane hold, and how
// fast a fleet may (re)connect.
type Limits struct {
	// MaxNodeIDBytes bounds a node id.
	MaxNodeIDBytes int
	// MaxNodes bounds the node ids with a stream open at once.
	MaxNodes int
	// MaxStreamsPerNode bounds the streams one node id may hold open: an
	// Envoy holds three (ADS, stats, load reports), and a reconnect may
	// overlap the stream it replaces.
	MaxStreamsPerNode int
	// MaxStreamsPerConn is HTTP/2's concurrent streams per connection.
	MaxStreamsPerConn uint32
	// StreamsPerSecond and StreamBurst are the rate of new streams; a
	// stream over it is refused with RESOURCE_EXHAUSTED, and Envoy retries
	// it after a jittered, growing back-off.
	StreamsPerSecond float64
	StreamBurst      int
	// MaxConnectionAge ends each connection after about this long (with a
	// grace period for the stream to move), so that Envoys spread over the
	// replicas again after one comes back.
	MaxConnectionAge time.Duration
	// MaxRecvBytes bounds one request message.
	MaxRecvBytes int
}

// DefaultLimits serve a fleet of thousands of Envoys from one replica.
var DefaultLimits = Limits{
	MaxNodeIDBytes:    256,
	MaxNodes:          10_000,
	MaxStreamsPerNode: 6,
	MaxStreamsPerConn: 8,
	StreamsPerSecond:  100,
	StreamBurst:       50,
	MaxConnectionAge:  30 * time.Minute,
	MaxRecvBytes:      1 << 20,
}

// requestLimits bound what one xDS request holds, checked before it is
// decoded: a megabyte of empty node metadata fields would decode to a
// hundred. A delta request names at most every resource of a policy (tens
// of thousands at the policy's bounds).
var requestLimits = wirebound.Limits{ListEntries: 100_000, DecodedBytes: 16 << 20}

// readBufferBytes is the xDS server's read buffer per connection.
const readBufferBytes = 4 << 10

// Envoy's bootstrap pings every few seconds so that a dead control plane
// is noticed quickly, and the server must not take those pings as abuse.
// The server's own pings are patient: an Envoy compiling a Wasm module
// holds its main thread for seconds (tens of seconds on a loaded 2-core
// machine) and must not lose its stream for it.
var (
	serverKeepalive = keepalive.ServerParameters{Time: time.Minute, Timeout: 30 * time.Second}
	keepalivePolicy = keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}
)

// Guard admits xDS streams: it rate-limits new streams, bounds node ids
// and streams per node, and, when the server runs mutual TLS, refuses a
// stream whose node id is not the one its client certificate names
// before anything is sent to it.
type Guard struct {
	limits   Limits
	binding  *mtls.Binding
	limiter  *rate.Limiter
	refusals *prometheus.CounterVec
	log      *slog.Logger

	mu    sync.Mutex
	nodes map[string]int // open streams per node id
}

// NewGuard returns a guard; binding is nil for a plaintext (loopback)
// server, where there is no certificate to bind to. Its refusals are
// counted in reg (nil: not exported).
func NewGuard(l Limits, binding *mtls.Binding, reg prometheus.Registerer, log *slog.Logger) *Guard {
	g := &Guard{
		limits: l, binding: binding, log: log,
		limiter: rate.NewLimiter(rate.Limit(l.StreamsPerSecond), l.StreamBurst),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directpipe_xds_streams_refused_total",
			Help: "xDS streams refused, by reason (rate, identity, no_certificate, node_id_too_long, too_many_nodes, ...).",
		}, []string{"reason"}),
		nodes: map[string]int{},
	}
	if reg != nil {
		reg.MustRegister(g.refusals)
	}
	return g
}

// ServerOptions are the gRPC server options that carry the guard and the
// connection limits.
func (g *Guard) ServerOptions() []grpc.ServerOption {
	ka := serverKeepalive
	if g.limits.MaxConnectionAge > 0 {
		ka.MaxConnectionAge = g.limits.MaxConnectionAge
		ka.MaxConnectionAgeGrace = time.Minute
	}
	return []grpc.ServerOption{
		grpc.MaxConcurrentStreams(g.limits.MaxStreamsPerConn),
		grpc.MaxRecvMsgSize(g.limits.MaxRecvBytes),
		grpc.ForceServerCodecV2(wirebound.Codec(requestLimits)),
		// A node's connection is idle between changes, and gRPC's 32 KiB
		// read buffer per connection was the largest part of what each
		// node cost (a third of the replica's heap with 1,000 nodes). A
		// TLS connection buffers a whole record already, and a frame
		// larger than the buffer is read past it, so a small one costs
		// no extra reads where it matters.
		grpc.ReadBufferSize(readBufferBytes),
		grpc.KeepaliveParams(ka),
		grpc.KeepaliveEnforcementPolicy(keepalivePolicy),
		grpc.StreamInterceptor(g.intercept),
		// ADS is the only service; a unary call has no business here.
		grpc.UnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
			return nil, status.Error(codes.Unimplemented, "no unary calls on the xDS port")
		}),
	}
}

// Nodes is the number of node ids with a stream open.
func (g *Guard) Nodes() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.nodes)
}

func (g *Guard) intercept(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !g.limiter.Allow() {
		g.refused("rate")
		return status.Error(codes.ResourceExhausted, "too many new xDS streams: retry after a back-off")
	}
	var cert *x509.Certificate
	if g.binding != nil {
		if cert = peerCert(ss.Context()); cert == nil {
			g.refused("no_certificate")
			return status.Error(codes.Unauthenticated, "xDS needs a client certificate")
		}
	}
	s := &guardedStream{ServerStream: ss, g: g, cert: cert}
	err := handler(srv, s)
	if s.node != "" {
		g.release(s.node)
	}
	if s.refusal != nil {
		return s.refusal
	}
	return err
}

// admit checks the node a stream's first request names.
func (g *Guard) admit(node string, cert *x509.Certificate) error {
	switch {
	case node == "":
		g.refused("no_node")
		return status.Error(codes.InvalidArgument, "the first xDS request must name the node (node.id)")
	case len(node) > g.limits.MaxNodeIDBytes:
		g.refused("node_id_too_long")
		return status.Errorf(codes.InvalidArgument, "node id is %d bytes; the limit is %d", len(node), g.limits.MaxNodeIDBytes)
	}
	if cert != nil {
		if err := g.binding.Check(cert, node); err != nil {
			g.refused("identity")
			g.log.Warn("xDS stream refused: node id and certificate disagree", "error", err)
			return status.Error(codes.PermissionDenied, err.Error())
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	n, known := g.nodes[node]
	switch {
	case !known && len(g.nodes) >= g.limits.MaxNodes:
		g.refused("too_many_nodes")
		return status.Errorf(codes.ResourceExhausted, "the control plane serves %d nodes already", g.limits.MaxNodes)
	case n >= g.limits.MaxStreamsPerNode:
		g.refused("too_many_streams")
		return status.Errorf(codes.ResourceExhausted, "node %q has %d xDS streams open already", node, n)
	}
	g.nodes[node] = n + 1
	return nil
}

func (g *Guard) release(node string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.nodes[node] <= 1 {
		delete(g.nodes, node)
	} else {
		g.nodes[node]--
	}
}

func (g *Guard) refused(reason string) { g.refusals.WithLabelValues(reason).Inc() }

// Refused is how many streams were refused for reason.
func (g *Guard) Refused(reason string) float64 {
	var m dto.Metric
	if err := g.refusals.WithLabelValues(reason).Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// guardedStream checks every request's node before the xDS server sees
// it. A refusal ends the stream with the refusal's status.
type guardedStream struct {
	grpc.ServerStream
	g       *Guard
	cert    *x509.Certificate
	node    string
	refusal error
}

func (s *guardedStream) RecvMsg(m any) error {
	if s.refusal != nil {
		return s.refusal
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	n, ok := nodeOf(m)
	if !ok {
		return nil
	}
	id := n.GetId()
	switch {
	case s.node == "":
		if err := s.g.admit(id, s.cert); err != nil {
			s.refusal = err
			return err
		}
		s.node = id
	case n != nil && id != s.node:
		s.g.refused("node_changed")
		s.refusal = status.Errorf(codes.PermissionDenied, "a stream stays with its first node id (%q), not %q", s.node, clipID(id))
		return s.refusal
	}
	return nil
}

// nodeOf is the node a message names: discovery requests carry it, and
// Envoy's stats stream (the metrics service) carries it in its identifier.
// ok is false for messages that never name one.
func nodeOf(m any) (*corev3.Node, bool) {
	switch v := m.(type) {
	case interface{ GetNode() *corev3.Node }:
		return v.GetNode(), true
	case *metricsv3.StreamMetricsMessage:
		return v.GetIdentifier().GetNode(), true
	}
	return nil, false
}

func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil
	}
	return info.State.VerifiedChains[0][0]
}

func clipID(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%s… (%d bytes)", s[:64], len(s))
	}
	return s
}
