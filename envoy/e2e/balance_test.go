package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/balance"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// balancePools are the back ends of the balance test: one per policy, all
// over the same endpoints. Envoy balances, and reports load, per cluster,
// so the three run side by side through the same two Envoys, in one run.
var balancePools = []struct{ name, lb, extra string }{
	{"pool-rr", "round_robin", ""},
	{"pool-lr", "least_request", ""},
	{"pool-ls", "least_streams", ", slow_start: 2s, drain_path: /debug/drain"},
}

const lsPool = "pool-ls"

// setPools writes the pools' routes and back ends over endpoints.
func setPools(p *policyParams, endpoints []string) {
	var routes, backends strings.Builder
	eps := `"` + strings.Join(endpoints, `", "`) + `"`
	for _, pool := range balancePools {
		fmt.Fprintf(&routes, "  - { name: %s, match: { path: /v1/%s }, kind: websocket, backend: %s }\n", pool.name, pool.name, pool.name)
		fmt.Fprintf(&backends, "  - { name: %s, endpoints: [%s], lb: %s%s }\n", pool.name, eps, pool.lb, pool.extra)
	}
	p.RoutesYAML, p.BackendsYAML = routes.String(), backends.String()
}

// wave is one probe run: streams that open at once and carry a frame a
// second until stopped, coming back after a Close 1001.
type wave struct {
	pool string
	stop chan struct{}
	done chan *voiceprobe.Result
}

func (s *stack) openWave(ctx context.Context, pool string, n int) *wave {
	w := &wave{pool: pool, stop: make(chan struct{}), done: make(chan *voiceprobe.Result, 1)}
	go func() {
		res, err := voiceprobe.Run(ctx, voiceprobe.Config{
			URL: s.listenURL("ws", "/v1/"+pool), Streams: n, Frames: 100_000, Interval: time.Second,
			Stop: w.stop, Reconnect: true, ReconnectJitter: 500 * time.Millisecond,
		})
		if err != nil {
			res = &voiceprobe.Result{FailedDials: n}
		}
		w.done <- res
	}()
	return w
}

// end stops the wave and returns what its streams saw.
func (w *wave) end(ctx context.Context, t *testing.T) *voiceprobe.Result {
	t.Helper()
	close(w.stop)
	select {
	case res := <-w.done:
		return res
	case <-ctx.Done():
		t.Fatalf("the %s wave never ended", w.pool)
		return nil
	}
}

// poolLive is each endpoint's fleet-wide live streams on a pool, from the
// Envoys' load reports (dpctl top).
func poolLive(resp *adminv1.ListStreamsResponse, pool string, endpoints []string) []uint64 {
	out := make([]uint64, len(endpoints))
	for _, r := range resp.GetStreams() {
		if r.GetBackend() == pool {
			if i := slices.Index(endpoints, r.GetEndpoint()); i >= 0 {
				out[i] += r.GetLive()
			}
		}
	}
	return out
}

func sum(v []uint64) uint64 {
	var n uint64
	for _, x := range v {
		n += x
	}
	return n
}

// waitCounted waits until load reports count want streams on each pool,
// and until every Envoy holds the least_streams weights those counts give.
func (s *stack) waitCounted(ctx context.Context, t *testing.T, want map[string]uint64, endpoints []string, envoys ...*testkit.Envoy) *adminv1.ListStreamsResponse {
	t.Helper()
	for {
		resp := s.listStreams()
		ok := true
		for pool, n := range want {
			ok = ok && sum(poolLive(resp, pool, endpoints)) == n
		}
		if ok && s.weightsServed(ctx, t, resp, endpoints, envoys...) {
			return resp
		}
		if ctx.Err() != nil {
			t.Fatalf("load reports never counted %v:\n%s", want, s.top())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// weightsServed reports whether every Envoy holds the weights the control
// plane serves for the least_streams pool, and those are the weights of
// the counts in resp (a push can be up to a second behind).
func (s *stack) weightsServed(ctx context.Context, t *testing.T, resp *adminv1.ListStreamsResponse, endpoints []string, envoys ...*testkit.Envoy) bool {
	eps := make([]balance.Endpoint, len(endpoints))
	for i, l := range poolLive(resp, lsPool, endpoints) {
		eps[i].Live = int(l)
	}
	want := map[string]uint32{}
	for i, w := range balance.Weights(eps) {
		want[endpoints[i]] = w
	}
	for _, e := range envoys {
		got := hostWeights(ctx, t, e, lsPool)
		for ep, w := range want {
			if got[ep] != w {
				return false
			}
		}
	}
	return true
}

// hostWeights is the weight of each host Envoy holds for a cluster.
func hostWeights(ctx context.Context, t testing.TB, e *testkit.Envoy, cluster string) map[string]uint32 {
	out := map[string]uint32{}
	for _, h := range clusterHosts(ctx, t, e, cluster) {
		out[h.address] = h.weight
	}
	return out
}

// envoyHost is a host of a cluster as Envoy's admin /clusters shows it.
type envoyHost struct {
	address   string
	edsStatus string
	weight    uint32
}

// clusterHosts reads the hosts Envoy holds for a cluster.
func clusterHosts(ctx context.Context, t testing.TB, e *testkit.Envoy, cluster string) []envoyHost {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.AdminURL()+"/clusters?format=json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var dump struct {
		ClusterStatuses []struct {
			Name         string `json:"name"`
			HostStatuses []struct {
				Address struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue int    `json:"port_value"`
					} `json:"socket_address"`
				} `json:"address"`
				HealthStatus struct {
					EDSHealthStatus string `json:"eds_health_status"`
				} `json:"health_status"`
				Weight uint32 `json:"weight"`
			} `json:"host_statuses"`
		} `json:"cluster_statuses"`
	}
	if err := json.Unmarshal(body, &dump); err != nil {
		t.Fatal(err)
	}
	var out []envoyHost
	for _, c := range dump.ClusterStatuses {
		if c.Name != cluster {
			continue
		}
		for _, h := range c.HostStatuses {
			out = append(out, envoyHost{
				address:   fmt.Sprintf("%s:%d", h.Address.SocketAddress.Address, h.Address.SocketAddress.PortValue),
				edsStatus: h.HealthStatus.EDSHealthStatus,
				weight:    h.Weight,
			})
		}
	}
	return out
}

// spread is "max/min" of counts.
func spread(live []uint64) string {
	return fmt.Sprintf("%d/%d", slices.Max(live), slices.Min(live))
}

// TestLeastStreamsBalance: two Envoys, three back ends, and one pool of
// them per policy: round_robin, least_request (per Envoy) and
// least_streams (fleet-wide). 300 streams per pool open in three waves
// through both Envoys; the test reports each pool's max/min live streams
// per endpoint and asserts least_streams is at least as even as
// round-robin, within a few streams. A fourth endpoint then joins every
// pool, loaded as they are, and 60 more streams open per pool: under
// least_streams most of them land on it. Then the least_streams pool is
// rebalanced: the endpoints above the mean end their extra streams with
// Close 1001, the callers reconnect, mostly to the new endpoint, and the
// spread narrows; no stream the back ends did not end loses a frame. No
// listener changes on either Envoy throughout (the weights move by EDS).
func TestLeastStreamsBalance(t *testing.T) {
	backends := []*testkit.Backend{testkit.StartBackend(t), testkit.StartBackend(t)}
	var endpoints []string
	s := newStack(t, false, func(p *policyParams) {
		endpoints = []string{p.Voice, backends[0].VoiceAddr, backends[1].VoiceAddr}
		setPools(p, endpoints)
	})
	second := testkit.StartEnvoy(t, testkit.EnvoyOptions{XDSAddr: s.cp.XDSAddr(), NodeID: "e2e-balance-second"})
	envoys := []*testkit.Envoy{s.envoy, second}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := second.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitHosts := func(eps []string) {
		for _, e := range envoys {
			for _, pool := range balancePools {
				for len(hostWeights(ctx, t, e, pool.name)) != len(eps) {
					if ctx.Err() != nil {
						t.Fatalf("Envoy never had the %d endpoints of %s", len(eps), pool.name)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}
	}
	waitHosts(endpoints)
	modified := map[*testkit.Envoy]int64{}
	for _, e := range envoys {
		n, err := e.Stat(ctx, "listener_manager.listener_modified")
		if err != nil {
			t.Fatal(err)
		}
		modified[e] = n
	}
	ldsVersion := s.cp.XDS().Versions()[resource.ListenerType]

	// Three waves of 100 streams per pool, each counted before the next.
	const waves, perWave = 3, 100
	var opened []*wave
	want := map[string]uint64{}
	var resp *adminv1.ListStreamsResponse
	for range waves {
		for _, pool := range balancePools {
			opened = append(opened, s.openWave(ctx, pool.name, perWave))
			want[pool.name] += perWave
		}
		resp = s.waitCounted(ctx, t, want, endpoints, envoys...)
	}
	even := map[string][]uint64{}
	var report []string
	for _, pool := range balancePools {
		even[pool.name] = poolLive(resp, pool.name, endpoints)
		report = append(report, fmt.Sprintf("%s %s %v", pool.lb, spread(even[pool.name]), even[pool.name]))
	}
	t.Logf("dpctl top after %d streams per pool:\n%s", waves*perWave, s.top())
	t.Logf("balance: %d streams per pool through 2 Envoys over 3 endpoints, max/min live per endpoint: %s",
		waves*perWave, strings.Join(report, "; "))
	width := func(v []uint64) uint64 { return slices.Max(v) - slices.Min(v) }
	if ls, rr := width(even[lsPool]), width(even["pool-rr"]); ls > rr+10 {
		t.Errorf("least_streams is less even than round_robin: %v against %v", even[lsPool], even["pool-rr"])
	}

	// A fourth endpoint joins every pool.
	added := testkit.StartBackend(t)
	endpoints = append(endpoints, added.VoiceAddr)
	setPools(&s.params, endpoints)
	s.writePolicy()
	waitHosts(endpoints)
	const joining = 60
	for range 2 {
		for _, pool := range balancePools {
			opened = append(opened, s.openWave(ctx, pool.name, joining/2))
			want[pool.name] += joining / 2
		}
		resp = s.waitCounted(ctx, t, want, endpoints, envoys...)
	}
	report = report[:0]
	landed := map[string]uint64{}
	for _, pool := range balancePools {
		live := poolLive(resp, pool.name, endpoints)
		landed[pool.name] = live[3]
		report = append(report, fmt.Sprintf("%s %d of %d (max/min %s)", pool.lb, live[3], joining, spread(live)))
	}
	t.Logf("new endpoint: of %d new streams per pool it took %s", joining, strings.Join(report, "; "))
	if landed[lsPool] <= joining/2 {
		t.Errorf("least_streams sent %d of %d new streams to the new endpoint, want most", landed[lsPool], joining)
	}

	// Only the least_streams pool stays: the back ends shed among all the
	// streams they hold.
	var lsWaves []*wave
	for _, w := range opened {
		if w.pool != lsPool {
			w.end(ctx, t)
			delete(want, w.pool)
		} else {
			lsWaves = append(lsWaves, w)
		}
	}
	for _, pool := range balancePools {
		if pool.name != lsPool {
			want[pool.name] = 0
		}
	}
	resp = s.waitCounted(ctx, t, want, endpoints, envoys...)
	before := poolLive(resp, lsPool, endpoints)
	goAwaysBefore := 0
	for _, b := range append([]*testkit.Backend{s.backend, added}, backends...) {
		goAwaysBefore += int(backendStreams(t, b.VoiceAddr).GoAways)
	}

	code, plan, errb := s.dpctl("rebalance", lsPool, "--dry-run")
	if code != 0 {
		t.Fatalf("dpctl rebalance --dry-run: exit %d: %s", code, errb)
	}
	t.Logf("dpctl rebalance %s --dry-run:\n%s", lsPool, plan)
	code, out, errb := s.dpctl("rebalance", lsPool, "--window", "3s")
	if code != 0 || !strings.Contains(out, "asked the back ends to end") {
		t.Fatalf("dpctl rebalance: exit %d: %s%s", code, out, errb)
	}
	t.Logf("dpctl rebalance %s --window 3s:\n%s", lsPool, out)
	var asked int
	fmt.Sscanf(out[strings.Index(out, "asked the back ends to end "):], "asked the back ends to end %d", &asked)
	if asked == 0 {
		t.Fatalf("the rebalance asked for nothing:\n%s", out)
	}
	// Every stream asked to go has gone, reconnected, and been counted.
	for {
		goAways := 0
		for _, b := range append([]*testkit.Backend{s.backend, added}, backends...) {
			goAways += int(backendStreams(t, b.VoiceAddr).GoAways)
		}
		if goAways-goAwaysBefore >= asked {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the back ends sent %d of the %d Close 1001 asked", goAways-goAwaysBefore, asked)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp = s.waitCounted(ctx, t, want, endpoints, envoys...)
	after := poolLive(resp, lsPool, endpoints)
	t.Logf("rebalance: %d streams asked to reconnect; least_streams max/min %s %v before, %s %v after",
		asked, spread(before), before, spread(after), after)
	if width(after) >= width(before) {
		t.Errorf("the rebalance did not narrow the spread: %v before, %v after", before, after)
	}

	// No stream the back ends did not end lost a frame; every one they
	// ended came back.
	var goAways, failed int
	for _, w := range lsWaves {
		res := w.end(ctx, t)
		failed += res.FailedDials
		for i, st := range res.Streams {
			goAways += st.GoAways
			switch {
			case len(st.Reconnects) != st.GoAways:
				t.Errorf("%s stream %d: %d Close 1001, %d reconnects (%s)", w.pool, i, st.GoAways, len(st.Reconnects), st.Error)
			case st.Disconnected || st.Lost > 0 || st.Reordered > 0 || st.Corrupted > 0:
				t.Errorf("%s stream %d: disconnected %v, lost %d, reordered %d, corrupted %d (%s)", w.pool, i, st.Disconnected, st.Lost, st.Reordered, st.Corrupted, st.Error)
			}
		}
	}
	if goAways != asked || failed != 0 {
		t.Errorf("the probes saw %d Close 1001 (asked %d) and %d failed dials", goAways, asked, failed)
	}
	for _, e := range envoys {
		if n, _ := e.Stat(ctx, "listener_manager.listener_modified"); n != modified[e] {
			t.Errorf("listener_modified moved from %d to %d", modified[e], n)
		}
	}
	if v := s.cp.XDS().Versions()[resource.ListenerType]; v != ldsVersion {
		t.Errorf("the listener version moved from %q to %q", ldsVersion, v)
	}
}
