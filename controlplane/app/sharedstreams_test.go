//go:build !wasip1

package app_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	promv1 "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/app"
	"github.com/directpipe/directpipe/controlplane/store"
	"github.com/directpipe/directpipe/envoy/testkit"
)

func startNamedReplica(t *testing.T, endpoints, seed, name string) *app.App {
	t.Helper()
	eps, err := store.ParseURL("etcd://" + endpoints)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.NewEtcd(store.EtcdConfig{Endpoints: eps, Replica: name, LeaseTTL: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, app.Config{
		Store: st, PolicyFile: seed, Replica: name, XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		AdminToken: testToken, WasmPath: "/x.wasm", Log: log, LoadReportInterval: 100 * time.Millisecond,
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	return a
}

func voiceReport(live uint64) []*endpointv3.ClusterStats {
	return []*endpointv3.ClusterStats{{
		ClusterName: "voice",
		UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{{UpstreamEndpointStats: []*endpointv3.UpstreamEndpointStats{{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8081},
			}}},
			TotalRequestsInProgress: live,
		}}}},
	}}
}

func edsStatus(a *app.App) string {
	for _, r := range a.Resources()[resource.EndpointType] {
		if cla := r.(*endpointv3.ClusterLoadAssignment); cla.GetClusterName() == "voice" {
			for _, lb := range cla.GetEndpoints()[0].GetLbEndpoints() {
				if lb.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() == 8081 {
					return lb.GetHealthStatus().String()
				}
			}
		}
	}
	return "absent"
}

func within(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !ok(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestReplicasShareStreamsAndDrains: two replicas on one etcd. Each
// answers for the streams Envoys report to the other; a drain started
// through one is served DRAINING by both; it ends, on both, once the
// fleet's reports show no stream, and a cancel through either brings the
// endpoint back on both.
func TestReplicasShareStreamsAndDrains(t *testing.T) {
	cluster := testkit.StartEtcd(t, 1)
	seed := copyExample(t)
	b0, err := os.ReadFile(seed)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(seed, bytes.Replace(b0, []byte("endpoints: [127.0.0.1:8081]"), []byte("endpoints: [127.0.0.1:8081, 127.0.0.1:8083]"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	a := startNamedReplica(t, cluster.Endpoints(), seed, "a")
	b := startNamedReplica(t, cluster.Endpoints(), seed, "b")
	ctx := t.Context()

	a.LoadReports().Record("envoy-on-a", voiceReport(3))
	b.LoadReports().Record("envoy-on-b", voiceReport(4))
	for _, r := range []*app.App{a, b} {
		within(t, r.Replica()+" counts 7 live streams over the fleet", func() bool {
			rows, _, _ := r.Streams(ctx)
			var n uint64
			for _, row := range rows {
				n += row.GetLive()
			}
			return n == 7
		})
	}

	if _, err := b.DrainEndpoint(ctx, "voice", "127.0.0.1:8081", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	within(t, "both replicas serve the endpoint DRAINING", func() bool {
		return edsStatus(a) == "DRAINING" && edsStatus(b) == "DRAINING"
	})
	// Streams left on the Envoy of either replica keep it DRAINING.
	stop := time.Now().Add(3 * time.Second)
	for time.Now().Before(stop) {
		a.LoadReports().Record("envoy-on-a", voiceReport(0))
		b.LoadReports().Record("envoy-on-b", voiceReport(1))
		if edsStatus(a) != "DRAINING" || edsStatus(b) != "DRAINING" {
			t.Fatalf("with a stream left on envoy-on-b: %s on a, %s on b", edsStatus(a), edsStatus(b))
		}
		time.Sleep(100 * time.Millisecond)
	}
	within(t, "the endpoint leaves EDS on both once no Envoy holds a stream", func() bool {
		a.LoadReports().Record("envoy-on-a", voiceReport(0))
		b.LoadReports().Record("envoy-on-b", voiceReport(0))
		return edsStatus(a) == "absent" && edsStatus(b) == "absent"
	})
	for _, r := range []*app.App{a, b} {
		ds := r.Drains()
		if len(ds) != 1 || ds[0].GetState() != adminv1.DrainState_DRAINED || ds[0].GetEndedBy() != "no_streams" {
			t.Errorf("%s: drains = %v, want one DRAINED by no_streams", r.Replica(), ds)
		}
	}
	if _, err := a.DrainEndpoint(ctx, "voice", "127.0.0.1:8081", 0, true); err != nil {
		t.Fatal(err)
	}
	within(t, "the cancel brings the endpoint back on both", func() bool {
		return edsStatus(a) == "UNKNOWN" && edsStatus(b) == "UNKNOWN"
	})
}

// TestReplicasShareQuotaUse: the identities' streams one replica's Envoys
// show in their stats reach the other replica through the store, which
// then answers for them (and splits quotas from them).
func TestReplicasShareQuotaUse(t *testing.T) {
	cluster := testkit.StartEtcd(t, 1)
	seed := copyExample(t)
	b0, err := os.ReadFile(seed)
	if err != nil {
		t.Fatal(err)
	}
	withQuota := bytes.Replace(b0, []byte("  - name: demo\n    sources:"), []byte("  - name: demo\n    quotas: { max_streams: 4 }\n    sources:"), 1)
	if bytes.Equal(withQuota, b0) {
		t.Fatal("the example policy no longer starts its demo auth policy as this test expects")
	}
	if err := os.WriteFile(seed, withQuota, 0o600); err != nil {
		t.Fatal(err)
	}
	a := startNamedReplica(t, cluster.Endpoints(), seed, "a")
	b := startNamedReplica(t, cluster.Endpoints(), seed, "b")
	a.NodeStats().Record("envoy-on-a", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{{
		Name: proto.String("wasmcustom.directpipe_quota_live.demo.alice"), Type: promv1.MetricType_GAUGE.Enum(),
		Metric: []*promv1.Metric{{Gauge: &promv1.Gauge{Value: proto.Float64(3)}}},
	}}})
	within(t, "replica b shows alice's 3 streams on envoy-on-a", func() bool {
		rows := b.QuotaStreams()
		return len(rows) == 1 && rows[0].GetIdentity() == "alice" && rows[0].GetLive() == 3 && rows[0].GetQuota() == 4 && rows[0].GetNodes()["envoy-on-a"] == 3
	})
}
