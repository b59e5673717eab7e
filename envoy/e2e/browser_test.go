package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestBrowserDemo opens the demo page in headless Chromium (Debian's
// package, driven by playwright-core). With a token in the subprotocol, the
// page sends the recorded speech over both paths at once: the direct path
// gets every frame back in order, the REST gateway path (a POST per frame
// through the REST route) gets every frame back, and the page shows each
// path's numbers. Without a token, Envoy refuses the WebSocket. With
// -demo-screenshot, the test writes the page as it ends to that file (the
// README's picture: docs/img/demo.png).
func TestBrowserDemo(t *testing.T) {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The Makefile exports both; these defaults are where `make tools`
	// puts them, so `go test` alone works too.
	chromium := envOr("CHROMIUM_BIN", "/usr/bin/chromium")
	playwright := envOr("PLAYWRIGHT_CORE", filepath.Join(root, ".tools", "node", "node_modules", "playwright-core"))
	for _, need := range []string{chromium, playwright} {
		if _, err := os.Stat(need); err != nil {
			t.Fatalf("%v: run `make tools`", err)
		}
	}
	s := newStack(t, false)
	pageURL := func(frames string) string {
		q := url.Values{"ws": {s.listenURL("ws", "/v1/voice")}, "rest": {s.listenURL("http", "/api/echo")}, "autostart": {"1"}}
		if frames != "" {
			q.Set("frames", frames)
		}
		return fmt.Sprintf("http://%s/?%s", s.backend.VoiceAddr, q.Encode())
	}
	page := pageURL("100")
	run := func(fragment string, extra ...string) map[string]any {
		t.Helper()
		args := append([]string{filepath.Join(root, "envoy", "e2e", "testdata", "browser_check.mjs"), page + fragment, "30000"}, extra...)
		cmd := exec.Command("node", args...)
		cmd.Stderr = os.Stderr
		cmd.Env = append(os.Environ(), "CHROMIUM_BIN="+chromium, "PLAYWRIGHT_CORE="+playwright)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("browser: %v", err)
		}
		var state map[string]any
		if err := json.Unmarshal(out, &state); err != nil {
			t.Fatalf("browser output %q: %v", out, err)
		}
		return state
	}

	got := run("#token="+validToken(t), screenshotArg(root)...)
	if got["state"] != "done" || got["received"] != float64(100) || got["reordered"] != float64(0) {
		t.Errorf("with a token: %v", got)
	}
	for _, name := range []string{"direct", "rest"} {
		p, _ := got[name].(map[string]any)
		if p["state"] != "done" || p["received"] != float64(100) || p["lost"] != float64(0) || p["rtts"] != float64(100) {
			t.Errorf("the %s path: %v, want all 100 frames back", name, p)
		}
		if p50, _ := p["p50"].(float64); p50 <= 0 {
			t.Errorf("the %s path shows no p50: %v", name, p)
		}
		shown := fmt.Sprint(p["shown"])
		for _, want := range []string{"received=100 / 100", "p99=", "handshake="} {
			if !strings.Contains(shown, want) {
				t.Errorf("the %s panel shows %s, want %q in it", name, shown, want)
			}
		}
		t.Logf("%s path in Chromium: p50 %.2f ms, p99 %.2f ms, first answer %.1f ms, %v out of order, %v late for playout",
			name, p["p50"], p["p99"], p["handshakeMs"], p["reordered"], p["late"])
	}
	if direct, _ := got["direct"].(map[string]any); direct["reordered"] != float64(0) {
		t.Errorf("the direct path reordered frames: %v", direct)
	}
	// Frames posted by the page reached the REST back end through Envoy.
	posted := 0
	for _, r := range backendRequests(t, s) {
		if r.Method == http.MethodPost && r.Path == "/api/echo" {
			posted++
		}
	}
	if posted != 100 {
		t.Errorf("the REST back end received %d POSTs of /api/echo, want the page's 100 frames", posted)
	}

	if got["protocol"] != "voice.v1" {
		t.Errorf("negotiated subprotocol %v, want voice.v1 (the token entry stripped)", got["protocol"])
	}
	hs := s.handshakes()
	for _, v := range hs[len(hs)-1].Headers["sec-websocket-protocol"] {
		if v != "voice.v1" {
			t.Errorf("the back end saw Sec-WebSocket-Protocol %q", v)
		}
	}

	got = run("")
	if got["state"] != "error" && got["state"] != "closed" || got["received"] != float64(0) {
		t.Errorf("without a token: %v", got)
	}

	// The drain contract in a browser: the back end sends Close 1001 with
	// its reconnect hint, and the page comes back and finishes its call.
	page = pageURL("150") + "&paths=direct"
	drained := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if c := backendStreams(t, s.backend.VoiceAddr); c.Live > 0 {
				resp, err := http.Post("http://"+s.backend.VoiceAddr+"/debug/drain?window=0s", "", nil)
				if err == nil {
					resp.Body.Close()
				}
				drained <- err
				return
			}
		}
		drained <- fmt.Errorf("the page never opened its stream")
	}()
	got = run("#token=" + validToken(t))
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	lost, _ := got["lostAtGoAway"].(float64)
	if got["state"] != "done" || got["reconnects"] != float64(1) || got["reordered"] != float64(0) ||
		got["received"].(float64)+lost != 150 {
		t.Errorf("a page sent Close 1001 by a draining back end: %v, want it to reconnect once and finish", got)
	}
	t.Logf("the page reconnected after Close 1001: %v frames echoed, %v in flight at the close", got["received"], lost)
}

var demoScreenshot = flag.String("demo-screenshot", "", "write the demo page, as the browser test leaves it, to this PNG file (relative to the repository's root)")

func screenshotArg(root string) []string {
	switch p := *demoScreenshot; {
	case p == "":
		return nil
	case filepath.IsAbs(p):
		return []string{p}
	default:
		return []string{filepath.Join(root, p)}
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
