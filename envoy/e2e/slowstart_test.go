package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// slowStartBootstrap is a WebSocket listener in front of a least_streams
// back end as translate programs it (least-request, no active-request
// bias, full scan, slow start), its endpoints from a file by EDS.
const slowStartBootstrap = `
node: { id: slow-start, cluster: e2e }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{.AdminPort}} } }
static_resources:
  listeners:
  - name: ws
    address: { socket_address: { address: 127.0.0.1, port_value: {{.Port}} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ws
          codec_type: HTTP1
          upgrade_configs:
          - upgrade_type: websocket
            filters:
            - name: envoy.filters.http.router
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          http_filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          route_config:
            virtual_hosts:
            - name: ws
              domains: ["*"]
              routes:
              - match: { prefix: / }
                route: { cluster: pool, timeout: 0s }
  clusters:
  - name: pool
    type: EDS
    connect_timeout: 1s
    eds_cluster_config:
      eds_config:
        resource_api_version: V3
        path_config_source: { path: "{{.Dir}}/eds.yaml" }
    load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.least_request
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest
            active_request_bias: { default_value: 0, runtime_key: directpipe.least_streams.active_request_bias }
            selection_method: FULL_SCAN
            slow_start_config: { slow_start_window: {{.Window}} }
`

const slowStartEDS = `
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: pool
  endpoints:
  - lb_endpoints:
{{- range .}}
    - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{.Port}} } } }
      load_balancing_weight: {{.Weight}}
{{- end}}
`

var (
	slowStartTemplate    = template.Must(template.New("bootstrap").Parse(slowStartBootstrap))
	slowStartEDSTemplate = template.Must(template.New("eds").Parse(slowStartEDS))
)

// TestLeastStreamsSlowStart puts Envoy 1.40's slow start on a
// least_streams back end to the test: a third endpoint joins two, with
// the EDS weights the control plane computes (StreamWeights) from the
// streams the two hold, and batches of new streams are counted by the
// back ends at the start of the window, half-way (logged) and after it.
//
// Joining an idle pool, the weights are even and the new endpoint ramps:
// its share of the first batch stays well below its share after the
// window. Joining a loaded pool (20 streams on each endpoint), the
// weights send the next streams to the empty endpoint (1000 against 1),
// and slow start, which scales a weight down to no less than a tenth,
// leaves it nearly all of them: it fills until even, as least_streams
// means it to, and does not ramp.
//
// Envoy puts the hosts it starts with in slow start as well, so the third
// endpoint joins a window after Envoy started. Slow start's input is time
// itself, so the test waits for points of the window to pass; it asserts only counts, and a late first batch (a
// loaded machine) only brings the shares closer, never reverses them.
func TestLeastStreamsSlowStart(t *testing.T) {
	for _, tc := range []struct {
		name string
		// live is the streams each of the two first endpoints holds when
		// the third joins.
		live     int
		wantRamp bool
	}{
		{"idle pool", 0, true},
		{"loaded pool", 20, false},
	} {
		t.Run(tc.name, func(t *testing.T) { slowStart(t, tc.live, tc.wantRamp) })
	}
}

func slowStart(t *testing.T, live int, wantRamp bool) {
	const window = 6 * time.Second
	bes := []*rawBackend{startRawBackend(t), startRawBackend(t), startRawBackend(t)}
	eps := make([]string, len(bes))
	for i, be := range bes {
		eps[i] = fmt.Sprintf("127.0.0.1:%d", be.port)
	}
	dir := t.TempDir()
	eds := filepath.Join(dir, "eds.yaml")
	writeEDS := func(live map[string]uint64, n int) map[string]uint32 {
		b := &policyv1.Backend{Name: "pool", Endpoints: eps[:n], Lb: policy.LBLeastStreams}
		weights := translate.StreamWeights(b, live, nil, 0)
		type ep struct {
			Port   int
			Weight uint32
		}
		var rows []ep
		for i := range n {
			rows = append(rows, ep{bes[i].port, weights[eps[i]]})
		}
		var buf strings.Builder
		if err := slowStartEDSTemplate.Execute(&buf, rows); err != nil {
			t.Fatal(err)
		}
		writeAtomic(t, eds, []byte(buf.String()))
		return weights
	}
	writeEDS(nil, 2)
	vals := map[string]any{"AdminPort": testkit.FreePort(t), "Port": testkit.FreePort(t), "Dir": dir, "Window": fmt.Sprintf("%ds", int(window.Seconds()))}
	e := testkit.StartEnvoyWithConfig(t, execTemplate(t, slowStartTemplate, vals), vals["AdminPort"].(int), 1, time.Second)
	// Hosts Envoy starts with are in slow start too, for one window from
	// the first EDS: the third endpoint joins after that.
	started := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*window+30*time.Second)
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", vals["Port"])

	var open []*harmStream
	defer func() {
		for _, s := range open {
			s.Close()
		}
	}()
	// batch opens n streams, keeps them, and returns how many landed on
	// each back end.
	batch := func(n int) []int64 {
		before := make([]int64, len(bes))
		for i, be := range bes {
			before[i] = be.handshakes.Load()
		}
		for range n {
			open = append(open, openStream(t, addr, false))
		}
		got := make([]int64, len(bes))
		for i, be := range bes {
			got[i] = be.handshakes.Load() - before[i]
		}
		return got
	}
	if live > 0 {
		if first := batch(2 * live); first[0] != int64(live) || first[1] != int64(live) {
			t.Fatalf("%d streams over two even endpoints landed %v", 2*live, first[:2])
		}
	}

	time.Sleep(time.Until(started.Add(window + time.Second)))
	weights := writeEDS(map[string]uint64{eps[0]: uint64(live), eps[1]: uint64(live)}, 3)
	if err := e.WaitStat(ctx, "cluster.pool.membership_total", func(v int64) bool { return v == 3 }); err != nil {
		t.Fatal(err)
	}
	joined := time.Now()
	share := float64(weights[eps[2]]) / float64(weights[eps[0]]+weights[eps[1]]+weights[eps[2]])
	const perBatch = 30
	early := batch(perBatch)
	earlyAt := time.Since(joined)
	time.Sleep(time.Until(joined.Add(window / 2)))
	mid := batch(perBatch)
	time.Sleep(time.Until(joined.Add(window + time.Second)))
	late := batch(perBatch)
	t.Logf("EDS weights %d/%d/%d (the new endpoint's %.0f%% of the sum); with a %v slow start it took %d of %d new streams at %v, %d of %d half-way, %d of %d after the window",
		weights[eps[0]], weights[eps[1]], weights[eps[2]], 100*share, window,
		early[2], perBatch, earlyAt.Round(100*time.Millisecond), mid[2], perBatch, late[2], perBatch)
	if earlyAt > window/2 {
		t.Fatalf("the first batch took %v, half the slow-start window: the machine is too loaded to see the ramp", earlyAt)
	}
	ramped := float64(early[2]) <= 0.5*float64(late[2])
	if ramped != wantRamp {
		t.Errorf("ramp %v, want %v: the new endpoint took %d of %d early, %d of %d after the window", ramped, wantRamp, early[2], perBatch, late[2], perBatch)
	}
}
