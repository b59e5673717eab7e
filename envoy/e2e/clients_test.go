package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
	"github.com/directpipe/directpipe/filter/contract"
)

// clientRoutes are the routes of TestClientAddressLists: lan takes only
// 10/8 but 10.66/16, local takes loopback, and a tcp route takes what
// its list says. Loopback is the only address a test can connect from;
// the listener trusts one proxy hop, so X-Forwarded-For names others.
const clientRoutes = `
  - name: lan
    match: { path: /v1/lan }
    kind: websocket
    backend: voice
    auth: demo
    clients: { %s }
  - { name: local, match: { path: /v1/local }, kind: websocket, backend: voice, auth: demo, clients: { allow: [127.0.0.0/8] } }
  - { name: tcp-clients, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: voice, auth: demo, clients: { %s } }
`

// TestClientAddressLists proves the per-route client address lists in a
// real Envoy, on the direct HTTP upgrade path and in tcp mode: a refused
// address gets 403 client_address without a challenge, even with a good
// token, and the back end receives nothing; an allowed one streams; the
// address Envoy believes from a trusted X-Forwarded-For is the one
// checked; and changing the lists is a filter config push that moves no
// listener and cuts no live stream.
// It runs once per build of the HTTP handshake filter.
func TestClientAddressLists(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { testClientAddressLists(t, build) })
	}
}

func testClientAddressLists(t *testing.T, build testkit.FilterBuild) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	lanLists := "allow: [10.0.0.0/8], deny: [10.66.0.0/16]"
	tcpLists := "allow: [127.0.0.0/8]"
	s := newStackWith(t, stackOptions{delta: true, filter: build}, func(p *policyParams) {
		p.ListenerLimits = "{ trusted_proxy_hops: 1 }"
		p.RoutesYAML = fmt.Sprintf(clientRoutes, lanLists, tcpAddr, tcpLists)
	})
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitStatus("SYNCED", "")
	ctx := context.Background()
	tok := validToken(t)
	bearer := http.Header{"Authorization": {"Bearer " + tok}}
	with := func(h http.Header, kv ...string) http.Header {
		out := h.Clone()
		for i := 0; i+1 < len(kv); i += 2 {
			out.Set(kv[i], kv[i+1])
		}
		return out
	}
	// seen counts what the back end received on a path.
	seen := func(path string) int {
		n := 0
		for _, r := range backendRequests(t, s) {
			if strings.HasPrefix(r.Path, path) {
				n++
			}
		}
		return n
	}
	refused := func(t *testing.T, resp *http.Response, body string) {
		t.Helper()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, `"client_address"`) {
			t.Fatalf("status %d, body %q; want 403 client_address", resp.StatusCode, body)
		}
		if c := resp.Header.Get("WWW-Authenticate"); c != "" {
			t.Fatalf("a refused address was challenged: %q", c)
		}
	}

	t.Run("http: a refused address gets 403 and the back end nothing", func(t *testing.T) {
		for _, xff := range []string{"", "10.66.1.1", "192.0.2.1"} {
			h := bearer
			if xff != "" {
				h = with(bearer, "X-Forwarded-For", xff)
			}
			resp, body := upgrade(t, s.listenURL("http", "/v1/lan"), h)
			refused(t, resp, body)
		}
		if n := seen("/v1/lan"); n != 0 {
			t.Fatalf("the back end received %d requests on the refused route", n)
		}
	})
	t.Run("http: an allowed address streams", func(t *testing.T) {
		resp, body := upgrade(t, s.listenURL("http", "/v1/lan"), with(bearer, "X-Forwarded-For", "10.1.2.3"))
		if resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("10.1.2.3 by a trusted hop: %d %s", resp.StatusCode, body)
		}
		res, err := voiceprobe.Run(ctx, voiceprobe.Config{URL: s.listenURL("ws", "/v1/local"), Header: bearer, Streams: 2, Frames: 50})
		if err != nil || res.Received != 100 || res.Lost != 0 || res.Reordered != 0 {
			t.Fatalf("loopback on an allow-loopback route: %v %+v", err, res)
		}
	})
	t.Run("http: the token is still checked for an allowed address", func(t *testing.T) {
		resp, body := upgrade(t, s.listenURL("http", "/v1/local"), nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("no token: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("tcp: an allowed address streams", func(t *testing.T) {
		got := rawExchange(t, tcpAddr, upgradeRequest("/v1/voice", "Authorization: Bearer "+tok))
		if got.status != http.StatusSwitchingProtocols {
			t.Fatalf("status %d: %s", got.status, got.body)
		}
	})

	// Live streams on both paths, through the change below.
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 2)
	for _, url := range []string{s.listenURL("ws", "/v1/local"), "ws://" + tcpAddr + "/v1/voice"} {
		go func() {
			res, err := voiceprobe.Run(ctx, voiceprobe.Config{URL: url, Header: bearer, Streams: 2, Frames: 5000, Interval: 20 * time.Millisecond, Stop: stop})
			if err != nil {
				t.Errorf("%s: %v", url, err)
			}
			results <- res
		}()
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := s.envoy.WaitStat(wctx, "cluster.voice.upstream_cx_active", func(v int64) bool { return v >= 4 }); err != nil {
		t.Fatal(err)
	}
	modifiedBefore, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
	if err != nil {
		t.Fatal(err)
	}

	// The lists change: lan now takes loopback, the tcp route refuses it.
	s.params.RoutesYAML = fmt.Sprintf(clientRoutes, "allow: [127.0.0.0/8]", tcpAddr, "deny: [127.0.0.0/8]")
	s.writePolicy()
	waitVersionMoved(t, s)

	t.Run("after the change: http takes the newly allowed address", func(t *testing.T) {
		eventually(t, func() (bool, string) {
			resp, body := upgrade(t, s.listenURL("http", "/v1/lan"), bearer)
			return resp.StatusCode == http.StatusSwitchingProtocols, fmt.Sprintf("lan from loopback: %d %s", resp.StatusCode, body)
		})
	})
	t.Run("after the change: tcp refuses the newly denied address", func(t *testing.T) {
		before := len(s.handshakes())
		var got rawResponse
		eventually(t, func() (bool, string) {
			got = rawExchange(t, tcpAddr, upgradeRequest("/v1/voice", "Authorization: Bearer "+tok))
			return got.status == http.StatusForbidden, fmt.Sprintf("tcp from loopback: %d %s", got.status, got.body)
		})
		if !strings.Contains(got.body, `"client_address"`) || got.header.Get("WWW-Authenticate") != "" || !got.closed {
			t.Fatalf("tcp denial: %+v", got)
		}
		// Handshakes let through before the change took effect are
		// allowed ones; after the 403 no other may have reached the
		// back end but those.
		after := len(s.handshakes())
		got = rawExchange(t, tcpAddr, upgradeRequest("/v1/voice", "Authorization: Bearer "+tok))
		if got.status != http.StatusForbidden {
			t.Fatalf("tcp from loopback again: %d %s", got.status, got.body)
		}
		if n := len(s.handshakes()); n != after {
			t.Fatalf("the back end received a refused tcp handshake (%d → %d, %d before the change)", after, n, before)
		}
	})

	time.Sleep(200 * time.Millisecond) // let the live streams carry frames after the change
	close(stop)
	for range 2 {
		res := <-results
		if res == nil || res.Disconnects != 0 || res.Lost != 0 || res.Reordered != 0 || res.FailedDials != 0 || res.Received == 0 {
			t.Fatalf("a live stream was hurt by the change: %+v", res)
		}
	}
	modifiedAfter, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
	if err != nil {
		t.Fatal(err)
	}
	if modifiedAfter != modifiedBefore {
		t.Errorf("listener_manager.listener_modified moved from %d to %d: a list change touched a listener", modifiedBefore, modifiedAfter)
	}

	stats := map[string]string{
		httpFilterStat(build, contract.MetricDeniedPrefix+contract.ReasonClientAddress):    "http",
		httpFilterStat(build, contract.MetricTCPDeniedPrefix+contract.ReasonClientAddress): "tcp",
	}
	for stat, path := range stats {
		v, err := s.envoy.Stat(ctx, stat)
		if err != nil || v == 0 {
			t.Errorf("%s refusals are not counted: %s = %d (%v)", path, stat, v, err)
		}
	}
}
