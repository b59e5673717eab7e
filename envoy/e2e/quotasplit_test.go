package e2e

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
)

// splitServed reads, from an Envoy's ECDS configuration, the share the
// control plane split for identity: the node it names and that node's
// share, and the rest; ok false when the identity has no split.
func splitServed(t *testing.T, e *testkit.Envoy, identity string) (node string, share, rest int, ok bool) {
	b, err := e.ConfigDump(t.Context(), "ecds_filters")
	if err != nil {
		return "", 0, 0, false
	}
	// The plugin configuration is JSON inside a JSON string: its quotes
	// are escaped.
	q := `\\*"`
	re := regexp.MustCompile(regexp.QuoteMeta(identity) + q + `:\{` + q + `rest` + q + `:(\d+),` + q + `nodes` + q + `:\{` + q + `([^"\\]+)` + q + `:(\d+)\}`)
	m := re.FindSubmatch(b)
	if m == nil {
		return "", 0, 0, false
	}
	rest, _ = strconv.Atoi(string(m[1]))
	share, _ = strconv.Atoi(string(m[3]))
	return string(m[2]), share, rest, true
}

// TestStreamQuotaSplitByUse proves the split by use with two Envoys
// sharing a quota of 4 (an even share of 2 each): alice opens her
// streams one at a time through one Envoy, A; as A's stats report them,
// the control plane gives A the free remainder, and A admits all 4 of
// alice's streams (the even split would refuse the third). Then alice
// opens streams through either Envoy until both refuse her: her live
// streams, counted by the test, by the back end and by both Envoys'
// gauges, never exceed the bound docs/admission.md states, quota +
// Envoys - 1.
func TestStreamQuotaSplitByUse(t *testing.T) { streamQuotaSplitByUse(t, testkit.FilterWasm) }

// TestNativeStreamQuotaSplitByUse is the same with two native Envoys: each
// reads its node id from its command line and bootstrap, so it applies
// its own share of the split, not the rest.
func TestNativeStreamQuotaSplitByUse(t *testing.T) { streamQuotaSplitByUse(t, testkit.FilterNative) }

func streamQuotaSplitByUse(t *testing.T, build testkit.FilterBuild) {
	const quota, envoys = 4, 2
	bound := quota + envoys - 1
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{metrics: true, filter: build}, func(p *policyParams) {
		p.RoutesYAML = fmt.Sprintf(quotaRoutes, tcpAddr)
		p.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, quota, 6)
	})
	const secondID = "e2e-quota-split-second"
	second := testkit.StartEnvoy(t, testkit.EnvoyOptions{XDSAddr: s.cp.XDSAddr(), NodeID: secondID, Filter: build})
	if err := second.WaitReady(t.Context()); err != nil {
		t.Fatal(err)
	}
	a := s.envoy
	for i, e := range []*testkit.Envoy{a, second} {
		waitFor(t, time.Minute, func() (bool, string) {
			ok, why := shareServed(t, e, quota/envoys)
			return ok, fmt.Sprintf("Envoy %d: %s", i, why)
		})
	}
	gauge := quotaLiveStat(build, "quota", "alice")
	liveOn := func(e *testkit.Envoy) int {
		v, _ := e.Stat(t.Context(), gauge)
		return int(v)
	}
	var open []held // alice's streams the test holds
	closed := 0     // and those it closed
	checkBound := func(when string) {
		t.Helper()
		atBackend := identitiesSeen(s, "/v1/quota")["alice"] - closed
		onA, onB := liveOn(a), liveOn(second)
		if len(open) > bound || atBackend > bound || onA+onB > bound {
			t.Fatalf("%s: alice holds %d streams (back end %d, Envoys %d+%d); the bound is %d", when, len(open), atBackend, onA, onB, bound)
		}
	}
	// Alice's streams through A, one at a time. The kernel spreads
	// connections between the two Envoys (SO_REUSEPORT), so a stream that
	// lands on the other is closed again.
	var sharesSeen []int
	for attempt := 0; len(open) < quota; attempt++ {
		if attempt == 100 {
			t.Fatalf("100 handshakes and A holds %d of alice's streams", len(open))
		}
		want := len(open) + 1
		if want > quota/envoys {
			// Past the even share: wait until A's stats have shown the
			// streams it holds and the control plane served A more.
			waitFor(t, time.Minute, func() (bool, string) {
				node, share, rest, ok := splitServed(t, a, "alice")
				return ok && node != secondID && share >= want, fmt.Sprintf("alice's split: node %q share %d rest %d (%v); want %d on A", node, share, rest, ok, want)
			})
			_, share, _, _ := splitServed(t, a, "alice")
			sharesSeen = append(sharesSeen, share)
		}
		h := hold(t, t, s.params.Listen, "/v1/quota", "alice")
		if h.status != http.StatusSwitchingProtocols {
			t.Fatalf("alice's stream %d: %d %s", want, h.status, h.body)
		}
		if liveOn(a) == want {
			open = append(open, h)
			checkBound(fmt.Sprintf("stream %d on A", want))
			continue
		}
		// It landed on the other Envoy: close it and wait until that
		// Envoy counts it no more.
		h.close()
		closed++
		waitFor(t, time.Minute, func() (bool, string) {
			n := liveOn(second)
			return n == 0, fmt.Sprintf("the other Envoy still counts %d of alice's streams", n)
		})
	}
	t.Logf("quota %d over %d Envoys (even share %d): alice holds %d streams on A; A's shares served past the even share: %v",
		quota, envoys, quota/envoys, liveOn(a), sharesSeen)
	// Now through either Envoy until both have refused her.
	refused := func(e *testkit.Envoy) int64 {
		v, _ := e.Stat(t.Context(), quotaRefusedStat(build, contract.ReasonStreamQuota, "alice"))
		return v
	}
	for i := 0; refused(a) == 0 || refused(second) == 0; i++ {
		if i == 200 {
			t.Fatalf("200 handshakes and the Envoys refused %d and %d", refused(a), refused(second))
		}
		h := hold(t, t, s.params.Listen, "/v1/quota", "alice")
		switch h.status {
		case http.StatusSwitchingProtocols:
			open = append(open, h)
		case http.StatusTooManyRequests:
			refusedFor(t, h, contract.ReasonStreamQuota)
		default:
			t.Fatalf("alice: %d %s", h.status, h.body)
		}
		checkBound(fmt.Sprintf("handshake %d through either Envoy", i))
	}
	t.Logf("both Envoys refuse alice: she holds %d streams (A %d, B %d, back end %d); bound %d",
		len(open), liveOn(a), liveOn(second), identitiesSeen(s, "/v1/quota")["alice"]-closed, bound)
	if len(open) < quota {
		t.Fatalf("alice holds %d streams, fewer than her quota %d", len(open), quota)
	}
	// The control plane shows the same, once the Envoys' stats arrive:
	// alice's row in `dpctl top`, and /metrics by identity and reason.
	liveRow := regexp.MustCompile(`(?m)^alice\s+quota\s+` + strconv.Itoa(len(open)) + `\s+` + strconv.Itoa(quota) + `\s+\S`)
	waitFor(t, time.Minute, func() (bool, string) {
		code, out, errs := s.dpctl("top")
		return code == 0 && liveRow.MatchString(out), fmt.Sprintf("dpctl top (%d): %s%s", code, out, errs)
	})
	_, out, _ := s.dpctl("top")
	t.Logf("dpctl top:\n%s", out)
	metrics := func() string {
		resp, err := http.Get("http://" + s.cp.MetricsAddr() + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	liveMetric := fmt.Sprintf(`directpipe_quota_streams_live{identity="alice",policy="quota"} %d`, len(open))
	refusedMetric := regexp.MustCompile(`directpipe_quota_refused\{identity="alice",reason="stream_quota"\} [1-9]`)
	var metricLines []string
	waitFor(t, time.Minute, func() (bool, string) {
		m := metrics()
		var lines []string
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "directpipe_quota_") {
				lines = append(lines, l)
			}
		}
		metricLines = lines
		return strings.Contains(m, liveMetric) && refusedMetric.MatchString(m), fmt.Sprintf("/metrics lacks alice's live streams or refusals: %q", lines)
	})
	t.Logf("/metrics:\n%s", strings.Join(metricLines, "\n"))
}

// quotaLiveStat is Envoy's name of an identity's live-stream gauge in a
// build (the native one's is a labelled stat), quotaRefusedStat its
// refusal counter's.
func quotaLiveStat(build testkit.FilterBuild, policy, identity string) string {
	if build == testkit.FilterNative {
		return contract.NativeStatPrefix + contract.MetricQuotaLive + "." + contract.LabelPolicy + "." + policy + "." + contract.LabelIdentity + "." + identity
	}
	return contract.WasmStatPrefix + contract.MetricQuotaLivePrefix + policy + "." + identity
}

func quotaRefusedStat(build testkit.FilterBuild, reason, identity string) string {
	if build == testkit.FilterNative {
		return contract.NativeStatPrefix + contract.MetricQuotaDeniedPrefix + reason + "." + contract.LabelIdentity + "." + identity
	}
	return contract.WasmStatPrefix + contract.MetricQuotaDeniedPrefix + reason + "." + identity
}
