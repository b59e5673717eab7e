package nodestats

import (
	"context"
	"fmt"
	"net"
	"reflect"
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
	s := New(nil)
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

func counter(name string, v float64) *promv1.MetricFamily {
	return &promv1.MetricFamily{Name: proto.String(name), Type: promv1.MetricType_COUNTER.Enum(),
		Metric: []*promv1.Metric{{Counter: &promv1.Counter{Value: proto.Float64(v)}}}}
}

// TestWasmHealth: the reload counters of every plugin add up per node; a
// report that raises them is a failure, heard once; a failed or held-back
// reload with no success leaves the node failing; a restarted Envoy's
// lower counters start again from where they are.
func TestWasmHealth(t *testing.T) {
	const (
		httpOK   = "wasm.directpipe.handshake.vm_reload_success"
		httpFail = "wasm.directpipe.handshake.vm_reload_failure"
		tcpOK    = "wasm.directpipe.handshake_tcp.voice-raw.vm_reload_success"
		tcpWait  = "wasm.directpipe.handshake_tcp.voice-raw.vm_reload_backoff"
	)
	type report map[string]float64
	for _, tt := range []struct {
		name    string
		reports []report
		events  []WasmEvent // Node and Health left out
		want    WasmHealth  // LastFailure: set iff Reloads+Failures > 0
	}{
		{"no failure", []report{{httpOK: 0, tcpOK: 0}, {httpOK: 0}}, nil, WasmHealth{}},
		{"a trap healed on both plugins", []report{{httpOK: 0, tcpOK: 0}, {httpOK: 2, tcpOK: 1}, {httpOK: 2, tcpOK: 2}},
			[]WasmEvent{{Reloads: 3}, {Reloads: 1}}, WasmHealth{Reloads: 4}},
		{"failures before the stream show once", []report{{httpOK: 2}, {httpOK: 2}}, []WasmEvent{{Reloads: 2}}, WasmHealth{Reloads: 2}},
		{"a VM that keeps failing", []report{{httpOK: 0}, {httpFail: 1, tcpWait: 3}, {httpFail: 2}},
			[]WasmEvent{{Failures: 4}, {Failures: 1}}, WasmHealth{Failures: 5, Failing: true}},
		{"failing, then healed", []report{{httpFail: 1}, {httpFail: 1, httpOK: 1}},
			[]WasmEvent{{Failures: 1}, {Reloads: 1}}, WasmHealth{Reloads: 1, Failures: 1}},
		{"a restarted Envoy", []report{{httpOK: 5}, {httpOK: 0}, {httpOK: 1}},
			[]WasmEvent{{Reloads: 5}, {Reloads: 1}}, WasmHealth{Reloads: 6}},
		{"other counters", []report{{"wasm.envoy.wasm.runtime.v8.created": 9, "wasm.directpipe.handshake.vm_reload": 3, "cluster.x.vm_reload_success": 4}}, nil, WasmHealth{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var events []WasmEvent
			s := New(func(e WasmEvent) {
				if e.Node != "edge-1" {
					t.Errorf("event for %q", e.Node)
				}
				e.Node, e.Health = "", WasmHealth{}
				events = append(events, e)
			})
			for _, r := range tt.reports {
				msg := &metricsv3.StreamMetricsMessage{}
				for name, v := range r {
					msg.EnvoyMetrics = append(msg.EnvoyMetrics, counter(name, v))
				}
				s.Record("edge-1", msg)
			}
			if len(events) != len(tt.events) {
				t.Fatalf("events %+v, want %+v", events, tt.events)
			}
			for i := range events {
				if events[i] != tt.events[i] {
					t.Errorf("event %d: %+v, want %+v", i, events[i], tt.events[i])
				}
			}
			got := s.Wasm()["edge-1"]
			if got.LastFailure.IsZero() != (tt.want.Reloads+tt.want.Failures == 0) {
				t.Errorf("last failure %v", got.LastFailure)
			}
			got.LastFailure = time.Time{}
			if got != tt.want {
				t.Errorf("health %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestWasmStatsBounded: a node cannot make the store keep more than
// maxWasmStats counters.
func TestWasmStatsBounded(t *testing.T) {
	s := New(nil)
	msg := &metricsv3.StreamMetricsMessage{}
	for i := range 2 * maxWasmStats {
		msg.EnvoyMetrics = append(msg.EnvoyMetrics, counter(fmt.Sprintf("wasm.p%d.vm_reload_success", i), 1))
	}
	s.Record("edge-1", msg)
	s.Record("edge-1", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{counter("wasm.other.vm_reload_failure", 1)}})
	if n := len(s.nodes["edge-1"].reloads); n > maxWasmStats {
		t.Fatalf("%d counters kept", n)
	}
}

// TestQuotaUse: the module's live-stream gauges are read back to policy
// and identity (escaped names included), kept across batches, and left
// out once stale; names that are not the module's are ignored.
func TestQuotaUse(t *testing.T) {
	s := New(nil)
	s.Record("edge-a", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{
		gauge("wasmcustom.directpipe_quota_live.voice.alice", 3),
		gauge("wasmcustom.directpipe_quota_live.voice.tenant_2ea_2fuser_201", 1),
		gauge("wasmcustom.directpipe_quota_live.voice.gone", 0),
		gauge("wasmcustom.directpipe_quota_live.voice.bad_zz", 9),
		gauge("wasmcustom.directpipe_quota_live.nodot", 9),
	}})
	s.Record("edge-a", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{
		gauge("wasmcustom.directpipe_quota_live_unlabelled", 2),
	}})
	s.Record("edge-b", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{gauge("server.live", 1), gauge("listener.x.downstream_cx_active", 1)}})
	// A native module's labelled stats, as Envoy renders them.
	s.Record("edge-n", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{
		gauge("dynamicmodulescustom.directpipe_quota_live.policy.voice.identity.alice", 2),
		gauge("dynamicmodulescustom.directpipe_quota_live.policy.voice.identity.tenant_2ea_2fuser_201", 1),
		gauge("dynamicmodulescustom.directpipe_quota_live.policy.voice", 7),
		gauge("dynamicmodulescustom.directpipe_quota_live_unlabelled", 4),
	}})
	got := s.QuotaUse()
	want := map[string]QuotaUse{
		"edge-a": {Live: map[string]map[string]int64{"voice": {"alice": 3, "tenant.a/user 1": 1}}, Unlabelled: 2},
		"edge-b": {Live: map[string]map[string]int64{}},
		"edge-n": {Live: map[string]map[string]int64{"voice": {"alice": 2, "tenant.a/user 1": 1}}, Unlabelled: 4},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("QuotaUse = %v, want %v", got, want)
	}
	counter := func(name string, v float64) *promv1.MetricFamily {
		return &promv1.MetricFamily{Name: proto.String(name), Type: promv1.MetricType_COUNTER.Enum(),
			Metric: []*promv1.Metric{{Counter: &promv1.Counter{Value: proto.Float64(v)}}}}
	}
	s.Record("edge-a", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{
		counter("wasmcustom.directpipe_quota_denied_stream_quota.alice", 4),
		counter("wasmcustom.directpipe_quota_denied_handshake_rate.other", 2),
	}})
	s.Record("edge-b", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{
		counter("wasmcustom.directpipe_quota_denied_stream_quota.alice", 1),
	}})
	s.Record("edge-n", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{
		counter("dynamicmodulescustom.directpipe_quota_denied_stream_quota.identity.alice", 2),
		counter("dynamicmodulescustom.directpipe_quota_denied_handshake_rate.identity.bob", 1),
	}})
	wantRefused := map[string]map[string]uint64{"stream_quota": {"alice": 7}, "handshake_rate": {"other": 2, "bob": 1}}
	if got := s.QuotaRefusals(); !reflect.DeepEqual(got, wantRefused) {
		t.Fatalf("QuotaRefusals = %v, want %v", got, wantRefused)
	}
	s.now = func() time.Time { return time.Now().Add(2 * stale) }
	if got := s.QuotaUse(); len(got) != 0 {
		t.Fatalf("stale: %v", got)
	}
}
