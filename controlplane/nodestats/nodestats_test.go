package nodestats

import (
	"context"
	"net"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	promv1 "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

func gauge(name string, v float64) *promv1.MetricFamily {
	return &promv1.MetricFamily{Name: proto.String(name), Type: promv1.MetricType_GAUGE.Enum(),
		Metric: []*promv1.Metric{{Gauge: &promv1.Gauge{Value: proto.Float64(v)}}}}
}

func TestStreamMetrics(t *testing.T) {
	s := New()
	g := grpc.NewServer()
	s.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	defer g.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := metricsv3.NewMetricsServiceClient(conn).StreamMetrics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	send := func(m *metricsv3.StreamMetricsMessage) {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
	}
	send(&metricsv3.StreamMetricsMessage{
		Identifier: &metricsv3.StreamMetricsMessage_Identifier{Node: &corev3.Node{Id: "edge-1"}},
		EnvoyMetrics: []*promv1.MetricFamily{
			gauge("listener.127.0.0.1_10000.downstream_cx_active", 12),
			gauge("listener.127.0.0.1_10000.worker_0.downstream_cx_active", 5),
			gauge("server.live", 1),
		},
	})
	// Later batches carry no identifier.
	send(&metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{gauge("listener.127.0.0.1_10001.downstream_cx_active", 3)}})
	waitFor(t, func() bool { return s.ActiveConnections("127.0.0.1:10001")["edge-1"] == 3 })
	if got := s.ActiveConnections("127.0.0.1:10000"); len(got) != 1 || got["edge-1"] != 12 {
		t.Errorf("10000: %v", got)
	}
	if got := s.ActiveConnections("127.0.0.1:9"); len(got) != 0 {
		t.Errorf("unknown listener: %v", got)
	}
	// Stale numbers are not reported.
	s.mu.Lock()
	s.now = func() time.Time { return time.Now().Add(2 * stale) }
	s.mu.Unlock()
	if got := s.ActiveConnections("127.0.0.1:10000"); len(got) != 0 {
		t.Errorf("stale: %v", got)
	}
	s.mu.Lock()
	s.now = time.Now
	s.mu.Unlock()
	// The node's numbers go with its stream.
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(s.ActiveConnections("127.0.0.1:10000")) == 0 })
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStatPrefix(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:10000": "127.0.0.1_10000", "[::1]:443": "[__1]_443", "x": "x"} {
		if got := StatPrefix(in); got != want {
			t.Errorf("StatPrefix(%q) = %q, want %q", in, got, want)
		}
	}
}
