package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
)

// TestNativeIdentityStats proves the native module's per-identity stats
// on a real Envoy: alice's live-stream gauge follows her streams as they
// open and close (the close counted in the stream's destroy callback),
// a refusal over her quota counts on her refusal counter, a tcp mode
// stream shows in its identity's gauge once the HTTP filter sets it, Envoy's
// Prometheus output carries policy and identity as labels, and the
// control plane reads the native form into `dpctl top` and /metrics as it
// reads the Wasm module's.
func TestNativeIdentityStats(t *testing.T) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{filter: testkit.FilterNative, metrics: true}, func(p *policyParams) {
		p.RoutesYAML = fmt.Sprintf(quotaRoutes, tcpAddr)
		p.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, 2, 3)
	})
	s.waitStatus("SYNCED", "")
	direct := s.params.Listen
	waitLive := func(identity string, want int64) {
		t.Helper()
		err := s.envoy.WaitStat(t.Context(), quotaLiveStat(testkit.FilterNative, "quota", identity), func(v int64) bool { return v == want })
		if err != nil {
			all, _ := s.envoy.Stats(t.Context())
			t.Fatalf("%s's live streams: %v; the module's stats: %v", identity, err, quotaStats(all))
		}
	}
	var alice []held
	for i := range 2 {
		h := hold(t, t, direct, "/v1/quota", "alice")
		if h.status != http.StatusSwitchingProtocols {
			t.Fatalf("alice's stream %d: %d %s", i, h.status, h.body)
		}
		alice = append(alice, h)
		waitLive("alice", int64(i+1))
	}
	bob := hold(t, t, direct, "/v1/quota", "bob")
	if bob.status != http.StatusSwitchingProtocols {
		t.Fatalf("bob: %d %s", bob.status, bob.body)
	}
	waitLive("bob", 1)
	refusedFor(t, hold(t, t, direct, "/v1/quota", "alice"), contract.ReasonStreamQuota)
	if err := s.envoy.WaitStat(t.Context(), quotaRefusedStat(testkit.FilterNative, contract.ReasonStreamQuota, "alice"), func(v int64) bool { return v == 1 }); err != nil {
		t.Fatalf("alice's refusal: %v", err)
	}
	if seen := identitiesSeen(s, "/v1/quota"); seen["alice"] != 2 || seen["bob"] != 1 {
		t.Fatalf("upgrades the back end received per identity: %v; want alice 2, bob 1", seen)
	}
	alice[0].close()
	waitLive("alice", 1)
	bob.close()
	waitLive("bob", 0)

	// tcp mode: Envoy 1.40's network filter sets no labelled stat, so
	// carol's tcp mode stream is counted in the module and shows in her
	// gauge once the HTTP filter sets it, at her next stream there.
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if h := hold(t, t, tcpAddr, "/v1/quota", "carol"); h.status != http.StatusSwitchingProtocols {
		t.Fatalf("carol in tcp mode: %d %s", h.status, h.body)
	}
	if h := hold(t, t, direct, "/v1/quota", "carol"); h.status != http.StatusSwitchingProtocols {
		t.Fatalf("carol on the direct path: %d %s", h.status, h.body)
	}
	waitLive("carol", 2)

	// Envoy's Prometheus output: the identity is a label, not a name.
	resp, err := http.Get(s.envoy.AdminURL() + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	prom, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var promLines []string
	for _, l := range strings.Split(string(prom), "\n") {
		if strings.Contains(l, "directpipe_quota") && !strings.HasPrefix(l, "#") {
			promLines = append(promLines, l)
		}
	}
	t.Logf("Envoy's Prometheus lines:\n%s", strings.Join(promLines, "\n"))
	promLive := regexp.MustCompile(`(?m)^envoy_dynamicmodulescustom_directpipe_quota_live\{(policy="quota",identity="alice"|identity="alice",policy="quota")\} 1$`)
	if !promLive.Match(prom) {
		t.Errorf("Envoy's Prometheus output has no labelled gauge of alice's 1 live stream")
	}

	// The control plane's view, once the Envoy's stats arrive.
	aliceRow := regexp.MustCompile(`(?m)^alice\s+quota\s+1\s+2\s+\S`)
	waitFor(t, time.Minute, func() (bool, string) {
		code, out, errs := s.dpctl("top")
		return code == 0 && aliceRow.MatchString(out), fmt.Sprintf("dpctl top (%d): %s%s", code, out, errs)
	})
	liveMetric := `directpipe_quota_streams_live{identity="alice",policy="quota"} 1`
	refusedMetric := `directpipe_quota_refused{identity="alice",reason="stream_quota"} 1`
	waitFor(t, time.Minute, func() (bool, string) {
		resp, err := http.Get("http://" + s.cp.MetricsAddr() + "/metrics")
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := string(b)
		return strings.Contains(m, liveMetric) && strings.Contains(m, refusedMetric), "the control plane's /metrics lacks alice's live stream or refusal"
	})
}

// quotaStats picks the module's quota stats out of Envoy's.
func quotaStats(all map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range all {
		if strings.Contains(k, "directpipe_quota") {
			out[k] = v
		}
	}
	return out
}
