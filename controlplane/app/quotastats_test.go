package app

import (
	"fmt"
	"reflect"
	"testing"

	metricsv3 "github.com/envoyproxy/go-control-plane/envoy/service/metrics/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	promv1 "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/nodestats"
	"github.com/directpipe/directpipe/controlplane/translate"
)

func TestIdentityRows(t *testing.T) {
	p := &policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{
		{Name: "demo", Quotas: &policyv1.Quotas{MaxStreams: 4, IdentityMaxStreams: map[string]uint32{"gold": 10}}},
		{Name: "open"},
	}}
	use := map[string]nodestats.QuotaUse{
		"edge-1": {Live: map[string]map[string]int64{"demo": {"alice": 3, "gold": 1, "bob": 1, "carol": 1}, "open": {"x": 9}}},
		"edge-2": {Live: map[string]map[string]int64{"demo": {"alice": 1, "gold": 2, "zed": 0}}},
	}
	got := identityRows(p, use, 2)
	want := []*adminv1.IdentityStreams{
		{Policy: "demo", Identity: "alice", Live: 4, Quota: 4, Nodes: map[string]uint64{"edge-1": 3, "edge-2": 1}},
		{Policy: "demo", Identity: "gold", Live: 3, Quota: 10, Nodes: map[string]uint64{"edge-1": 1, "edge-2": 2}},
		{Other: true, Live: 2, Nodes: map[string]uint64{"edge-1": 2}},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rows:\n%v\nwant:\n%v", got, want)
	}
	if got := identityRows(p, use, 20); len(got) != 4 {
		t.Fatalf("%d rows without a cut, want 4 (no policy without quotas, no identity without streams)", len(got))
	}
}

func TestTopRefusals(t *testing.T) {
	got := topRefusals(map[string]uint64{"a": 5, "b": 9, "c": 1, "other": 4, "d": 5}, 3)
	want := map[string]uint64{"b": 9, "a": 5, "d": 5, "other": 5}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("top = %v, want %v", got, want)
	}
}

func TestQuotaUseOf(t *testing.T) {
	stats := map[string]nodestats.QuotaUse{
		"a":    {Live: map[string]map[string]int64{"demo": {"alice": 3}}},
		"b":    {Live: map[string]map[string]int64{}, Unlabelled: 2},
		"gone": {Live: map[string]map[string]int64{"demo": {"alice": 7}}},
	}
	got := quotaUseOf([]string{"a", "b", "c"}, stats)
	want := &translate.QuotaUse{
		Nodes:   []string{"a", "b", "c"},
		Live:    map[string]map[string]map[string]uint32{"demo": {"alice": {"a": 3}}},
		Partial: map[string]bool{"b": true, "c": true},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("use = %+v, want %+v", got, want)
	}
}

// TestQuotaCollector: /metrics holds the identities' live streams and the
// refusals, from the nodes' stats, and gathers without error.
func TestQuotaCollector(t *testing.T) {
	a := &App{nodeStats: nodestats.New(nil)}
	a.served.Policy = &policyv1.Policy{AuthPolicies: []*policyv1.AuthPolicy{{Name: "demo", Quotas: &policyv1.Quotas{MaxStreams: 4}}}}
	family := func(name string, typ promv1.MetricType, v float64) *promv1.MetricFamily {
		m := &promv1.Metric{Gauge: &promv1.Gauge{Value: proto.Float64(v)}, Counter: &promv1.Counter{Value: proto.Float64(v)}}
		return &promv1.MetricFamily{Name: proto.String(name), Type: typ.Enum(), Metric: []*promv1.Metric{m}}
	}
	a.nodeStats.Record("edge-1", &metricsv3.StreamMetricsMessage{EnvoyMetrics: []*promv1.MetricFamily{
		family("wasmcustom.directpipe_quota_live.demo.alice", promv1.MetricType_GAUGE, 3),
		family("wasmcustom.directpipe_quota_denied_stream_quota.alice", promv1.MetricType_COUNTER, 2),
		family("wasmcustom.directpipe_quota_denied_handshake_rate.other", promv1.MetricType_COUNTER, 1),
	}})
	reg := prometheus.NewRegistry()
	reg.MustRegister(newQuotaCollector(a))
	got, err := testutil.GatherAndCount(reg)
	if err != nil || got != 3 {
		t.Fatalf("gathered %d series, %v; want 3", got, err)
	}
}
