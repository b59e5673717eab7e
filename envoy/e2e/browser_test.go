package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestBrowserDemo opens the demo page in headless Chromium (Debian's
// package, driven by playwright-core): with a token in the subprotocol it
// streams and gets every frame back in order; without one, Envoy refuses
// the connection.
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
	page := fmt.Sprintf("http://%s/?ws=%s&frames=100&autostart=1", s.backend.VoiceAddr, s.listenURL("ws", "/v1/voice"))
	run := func(fragment string) map[string]any {
		t.Helper()
		cmd := exec.Command("node", filepath.Join(root, "envoy", "e2e", "testdata", "browser_check.mjs"), page+fragment, "20000")
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

	got := run("#token=" + validToken(t))
	if got["state"] != "done" || got["received"] != float64(100) || got["reordered"] != float64(0) {
		t.Errorf("with a token: %v", got)
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
	page = fmt.Sprintf("http://%s/?ws=%s&frames=150&autostart=1", s.backend.VoiceAddr, s.listenURL("ws", "/v1/voice"))
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

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
