package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// counts is what a back end has received since it started
// (/debug/counts on its voice port).
type counts struct {
	Handshakes int64 `json:"handshakes"`
	Requests   int64 `json:"requests"`
}

func backendCounts(t testing.TB, b *testkit.Backend) counts {
	t.Helper()
	resp, err := http.Get("http://" + b.VoiceAddr + "/debug/counts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var c counts
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		t.Fatal(err)
	}
	return c
}

func lastRequest(t testing.TB, addr string) recorded {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/debug/requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []recorded
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list) == 0 {
		t.Fatalf("the back end's requests: %d, %v", len(list), err)
	}
	return list[len(list)-1]
}

// canaryRoutes is a WebSocket route with auth split between the stack's
// voice back end and a second one, by weight.
func canaryRoutes(stable, canary int) string {
	return fmt.Sprintf(`  - name: canary
    match: { path: /v1/canary }
    kind: websocket
    auth: demo
    backends: [{ name: voice, weight: %d }, { name: voice2, weight: %d }]`, stable, canary)
}

// TestCanarySplit measures a weighted split of new streams: 400 new
// WebSockets on a route with auth weighted 3:1 land on the two back ends
// in that ratio, counted by the back ends themselves, each with the
// verified identity and without the token. Then the weights move
// everything to the stable back end: a stream that was live on the canary
// keeps echoing (a split picks once, at the handshake, and the change is
// a route update, not a listener update), and every new stream lands on
// the stable one.
func TestCanarySplit(t *testing.T) {
	canary := testkit.StartBackend(t)
	backends := fmt.Sprintf(`  - { name: voice2, endpoints: ["%s"] }`, canary.VoiceAddr)
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = canaryRoutes(3, 1)
		p.BackendsYAML = backends
	})
	url := s.listenURL("http", "/v1/canary")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	auth := http.Header{"Authorization": {"Bearer " + validToken(t)}}

	const n = 400
	stable0, canary0 := backendCounts(t, s.backend), backendCounts(t, canary)
	for i := range n {
		if resp, body := upgrade(t, url, auth); resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("stream %d: %d %s", i, resp.StatusCode, body)
		}
	}
	hs := s.handshakes()
	last := hs[len(hs)-1].Headers
	if fmt.Sprint(last["x-directpipe-sub"]) != "[caller-1]" || len(last["authorization"]) != 0 {
		t.Errorf("the stable back end's last handshake: sub %q, authorization %q; want the verified sub and no token", last["x-directpipe-sub"], last["authorization"])
	}
	onStable := backendCounts(t, s.backend).Handshakes - stable0.Handshakes
	onCanary := backendCounts(t, canary).Handshakes - canary0.Handshakes
	share := float64(onCanary) / n
	t.Logf("%d new streams: %d on stable, %d on canary (%.1f%%, weight 25%%)", n, onStable, onCanary, 100*share)
	if onStable+onCanary != n {
		t.Errorf("the back ends saw %d handshakes, want %d", onStable+onCanary, n)
	}
	// Binomial, n = 400, p = 0.25: the standard deviation is 2.2 points;
	// 0.15-0.35 is more than four of them either side.
	if share < 0.15 || share > 0.35 {
		t.Errorf("canary share %.3f, want 0.25 (0.15-0.35)", share)
	}

	// A live stream on the canary: dial until one lands there.
	var live *websocket.Conn
	for i := 0; live == nil && i < 100; i++ {
		before := backendCounts(t, canary).Handshakes
		c, _, err := websocket.Dial(ctx, "ws://"+s.params.Listen+"/v1/canary", &websocket.DialOptions{HTTPHeader: auth})
		if err != nil {
			t.Fatal(err)
		}
		if backendCounts(t, canary).Handshakes > before {
			live = c
		} else {
			c.Close(websocket.StatusNormalClosure, "")
		}
	}
	if live == nil {
		t.Fatal("no stream landed on the canary in 100 tries")
	}
	defer live.CloseNow()
	echo(t, ctx, live, "before")

	modified, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
	if err != nil {
		t.Fatal(err)
	}
	reloads := rdsReloads(t, ctx, s.envoy)
	s.params.RoutesYAML = canaryRoutes(1, 0)
	s.writePolicy()
	// Wait until Envoy has applied the new route table. A run of streams
	// that all miss the canary is no proof: at 25% a run of 20 happens by
	// chance once in 300 tries, and a poll makes many tries.
	eventually(t, func() (bool, string) {
		now := rdsReloads(t, ctx, s.envoy)
		return now > reloads, fmt.Sprintf("Envoy reloaded routes %d times, want more than %d", now, reloads)
	})
	stable0, canary0 = backendCounts(t, s.backend), backendCounts(t, canary)
	for range 50 {
		upgrade(t, url, auth)
	}
	if got := backendCounts(t, canary).Handshakes - canary0.Handshakes; got != 0 {
		t.Errorf("%d of 50 new streams landed on the canary at weight 0", got)
	}
	if got := backendCounts(t, s.backend).Handshakes - stable0.Handshakes; got != 50 {
		t.Errorf("%d of 50 new streams landed on stable", got)
	}
	echo(t, ctx, live, "after")
	if now, _ := s.envoy.Stat(ctx, "listener_manager.listener_modified"); now != modified {
		t.Errorf("the weight change modified a listener (%d -> %d): live calls would be drained", modified, now)
	}
}

func echo(t testing.TB, ctx context.Context, c *websocket.Conn, msg string) {
	t.Helper()
	if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write on the live stream: %v", err)
	}
	_, got, err := c.Read(ctx)
	if err != nil || string(got) != msg {
		t.Fatalf("read on the live stream: %q %v, want %q", got, err, msg)
	}
}

// TestRoutingFeatures runs back ends by DNS name, path and prefix rewrites
// and REST header edits through a real Envoy, asserting on what the back
// ends received.
func TestRoutingFeatures(t *testing.T) {
	other := testkit.StartBackend(t)
	_, otherPort, _ := net.SplitHostPort(other.VoiceAddr)
	_, restPort, _ := net.SplitHostPort(other.RESTAddr)
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = `  - { name: by-name, match: { path: /v1/by-name }, kind: websocket, backend: voice-dns }
  - { name: rest-by-name, match: { prefix: /named/ }, kind: http, backend: rest-dns, rewrite: { prefix: /routes/ } }
  - { name: renamed, match: { path: /old/voice }, kind: websocket, backend: voice, rewrite: { path: /v1/renamed } }
  - name: edited
    match: { prefix: /edit/ }
    kind: http
    backend: rest
    rewrite: { prefix: /routes/ }
    request_headers_to_add: [{ name: x-tenant, value: acme }, { name: x-discount, value: "10%" }]
    request_headers_to_remove: [x-debug]
    response_headers_to_add: [{ name: x-served-by, value: directpipe }]
    response_headers_to_remove: [content-type]`
		p.BackendsYAML = fmt.Sprintf(`  - { name: voice-dns, endpoints: ["localhost:%s"], dns_refresh: 1s }
  - { name: rest-dns, endpoints: ["localhost:%s"] }`, otherPort, restPort)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("websocket by DNS name", func(t *testing.T) {
		before := backendCounts(t, other).Handshakes
		// Envoy resolves the name in its own time after the cluster
		// arrives: the first handshakes may find no host yet (503).
		var c *websocket.Conn
		eventually(t, func() (bool, string) {
			var err error
			c, _, err = websocket.Dial(ctx, "ws://"+s.params.Listen+"/v1/by-name", nil)
			return err == nil, fmt.Sprintf("dial the back end by name: %v", err)
		})
		if c == nil {
			return
		}
		defer c.CloseNow()
		echo(t, ctx, c, "hello by name")
		if got := backendCounts(t, other).Handshakes - before; got != 1 {
			t.Errorf("the back end named localhost saw %d handshakes, want 1", got)
		}
	})

	t.Run("REST by DNS name with a prefix rewrite", func(t *testing.T) {
		resp, err := http.Get(s.listenURL("http", "/named/alpha?q=1"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"alpha"`) {
			t.Fatalf("GET /named/alpha: %d %s", resp.StatusCode, body)
		}
		if got := lastRequest(t, other.RESTAddr).Path; got != "/routes/alpha?q=1" {
			t.Errorf("the back end received %q, want /routes/alpha?q=1", got)
		}
	})

	t.Run("websocket path rewrite keeps the query", func(t *testing.T) {
		c, _, err := websocket.Dial(ctx, "ws://"+s.params.Listen+"/old/voice?lang=en", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		echo(t, ctx, c, "renamed")
		hs := s.handshakes()
		if got := hs[len(hs)-1].Path; got != "/v1/renamed?lang=en" {
			t.Errorf("the back end's handshake path %q, want /v1/renamed?lang=en", got)
		}
	})

	t.Run("REST header edits", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.listenURL("http", "/edit/beta"), nil)
		req.Header.Set("X-Debug", "1")
		req.Header.Set("X-Tenant", "forged")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"beta"`) {
			t.Fatalf("GET /edit/beta: %d %s", resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Served-By"); got != "directpipe" {
			t.Errorf("response X-Served-By %q, want directpipe", got)
		}
		if got := resp.Header.Get("Content-Type"); got != "" {
			t.Errorf("response Content-Type %q, want it removed", got)
		}
		got := lastRequest(t, s.backend.RESTAddr)
		if got.Path != "/routes/beta" {
			t.Errorf("the back end received %s, want /routes/beta", got.Path)
		}
		for name, want := range map[string][]string{"x-tenant": {"acme"}, "x-discount": {"10%"}, "x-debug": nil} {
			if fmt.Sprint(got.Headers[name]) != fmt.Sprint(want) {
				t.Errorf("the back end received %s: %q, want %q", name, got.Headers[name], want)
			}
		}
	})
	t.Run("426 names the upgrade", func(t *testing.T) {
		before := backendCounts(t, s.backend)
		client := &http.Client{Timeout: 5 * time.Second}
		for range 2 { // the connection stays usable after the 426
			resp, err := client.Get(s.listenURL("http", "/v1/voice"))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// RFC 9110 §15.5.22: a 426 must say which protocol to upgrade
			// to, and §7.8: Upgrade goes with the upgrade option of
			// Connection.
			if resp.StatusCode != http.StatusUpgradeRequired || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") ||
				!strings.EqualFold(resp.Header.Get("Connection"), "upgrade") {
				t.Errorf("plain GET on a WebSocket path: %d, Upgrade %q, Connection %q; want 426 with Upgrade: websocket, Connection: upgrade",
					resp.StatusCode, resp.Header.Get("Upgrade"), resp.Header.Get("Connection"))
			}
		}
		// The headers that make the 426 say so never turn the request
		// into an upgrade: the back end saw nothing.
		if after := backendCounts(t, s.backend); after != before {
			t.Errorf("the back end saw %+v, then %+v: the plain GET reached it", before, after)
		}
	})
}

// rdsReloads sums Envoy's route-table reloads over every RDS subscription.
func rdsReloads(t testing.TB, ctx context.Context, e *testkit.Envoy) int64 {
	t.Helper()
	stats, err := e.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for name, v := range stats {
		if strings.Contains(name, ".rds.") && strings.HasSuffix(name, ".config_reload") {
			n += v
		}
	}
	return n
}
