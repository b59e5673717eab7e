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

// -demo-screenshot regenerates the README's picture of the demo page:
//
//	go test ./envoy/e2e -run 'TestBrowserDemo$' -demo-screenshot=$PWD/docs/img/demo.png
var demoScreenshot = flag.String("demo-screenshot", "", "save a PNG of the demo page after its side-by-side run to this file")

// demoPath is what the page measured on one path and the numbers it shows.
type demoPath struct {
	State        string            `json:"state"`
	Sent         int               `json:"sent"`
	Received     int               `json:"received"`
	Reordered    int               `json:"reordered"`
	Lost         int               `json:"lost"`
	LostAtGoAway int               `json:"lostAtGoAway"`
	Reconnects   int               `json:"reconnects"`
	Protocol     string            `json:"protocol"`
	HandshakeMs  *float64          `json:"handshakeMs"`
	P50          *float64          `json:"p50"`
	P99          *float64          `json:"p99"`
	Arrival      []int             `json:"arrival"`
	Shown        map[string]string `json:"shown"`
}

type demoRun struct {
	State  string              `json:"state"`
	Jitter string              `json:"jitter"`
	Paths  map[string]demoPath `json:"paths"`
}

// browserDemo runs the demo page in headless Chromium (Debian's package,
// driven by playwright-core) and returns what it saw.
type browserDemo struct {
	t                    *testing.T
	root, chromium, core string
}

func newBrowserDemo(t *testing.T) browserDemo {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The Makefile exports both; these defaults are where `make tools`
	// puts them, so `go test` alone works too.
	b := browserDemo{t: t, root: root,
		chromium: envOr("CHROMIUM_BIN", "/usr/bin/chromium"),
		core:     envOr("PLAYWRIGHT_CORE", filepath.Join(root, ".tools", "node", "node_modules", "playwright-core"))}
	for _, need := range []string{b.chromium, b.core} {
		if _, err := os.Stat(need); err != nil {
			t.Fatalf("%v: run `make tools`", err)
		}
	}
	return b
}

func (b browserDemo) run(page, screenshot string) demoRun {
	b.t.Helper()
	args := []string{filepath.Join(b.root, "envoy", "e2e", "testdata", "browser_check.mjs"), page, "60000"}
	if screenshot != "" {
		args = append(args, screenshot)
	}
	cmd := exec.Command("node", args...)
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "CHROMIUM_BIN="+b.chromium, "PLAYWRIGHT_CORE="+b.core)
	out, err := cmd.Output()
	if err != nil {
		b.t.Fatalf("browser: %v", err)
	}
	var run demoRun
	if err := json.Unmarshal(out, &run); err != nil {
		b.t.Fatalf("browser output %q: %v", out, err)
	}
	return run
}

func demoPage(s *stack, query url.Values) string {
	query.Set("ws", s.listenURL("ws", "/v1/voice"))
	query.Set("rest", s.listenURL("http", "/rest/voice"))
	query.Set("autostart", "1")
	return fmt.Sprintf("http://%s/?%s", s.backend.VoiceAddr, query.Encode())
}

// TestBrowserDemo: the demo page sends the same speech over the direct
// path and, one POST per frame, over the REST route. The direct path
// delivers every frame in order, the REST path delivers its frames in
// whatever order they came, and the page shows both paths' numbers.
// Without a token Envoy refuses the stream; a draining back end's Close
// 1001 brings the page back to finish its call.
func TestBrowserDemo(t *testing.T) {
	b := newBrowserDemo(t)
	// The demo's gateway route, as in examples/policy.yaml: the token
	// checked on every POST, CORS for the page's origin.
	s := newStack(t, false, func(p *policyParams) {
		p.RoutesYAML = fmt.Sprintf(`  - name: voice-rest
    match: { path: /rest/voice }
    kind: http
    backend: rest
    auth: demo
    rewrite: { path: /api/echo }
    cors: { allow_origins: ["http://%s"], allow_methods: [POST], max_age: 600s }`, p.Voice)
	})

	const frames = 120
	q := url.Values{"frames": {fmt.Sprint(frames)}}
	if *demoScreenshot != "" {
		// The picture shows the whole sentence with the jitter a real
		// network would add, labelled on the page as simulated.
		q = url.Values{"jitter": {"30ms"}}
	}
	before := backendCounts(t, s.backend)
	got := b.run(demoPage(s, q)+"#token="+validToken(t), *demoScreenshot)
	direct, rest := got.Paths["direct"], got.Paths["rest"]
	if got.State != "done" || direct.State != "done" || rest.State != "done" {
		t.Fatalf("side by side: page %s, direct %s, rest %s", got.State, direct.State, rest.State)
	}
	sent := direct.Sent
	if *demoScreenshot == "" && sent != frames {
		t.Errorf("direct path sent %d frames, want %d", sent, frames)
	}
	if direct.Received != sent || direct.Reordered != 0 || direct.Lost != 0 {
		t.Errorf("direct path: %d of %d frames back, %d out of order, %d lost; want all, in order",
			direct.Received, sent, direct.Reordered, direct.Lost)
	}
	for i, seq := range direct.Arrival {
		if seq != i {
			t.Fatalf("direct path: frame %d arrived in place %d", seq, i)
		}
	}
	if rest.Sent != sent || rest.Received+rest.Lost != sent || rest.Received == 0 {
		t.Errorf("REST path: %d sent, %d back, %d lost", rest.Sent, rest.Received, rest.Lost)
	}
	if last := lastRequest(t, s.backend.RESTAddr); last.Path != "/api/echo" && !strings.HasPrefix(last.Path, "/api/echo?jitter=") {
		t.Errorf("the back end's last POST was to %q: want /api/echo, the token stripped from the query", last.Path)
	}
	if direct.Protocol != "voice.v1" {
		t.Errorf("negotiated subprotocol %q, want voice.v1 (the token entry stripped)", direct.Protocol)
	}
	hs := s.handshakes()
	for _, v := range hs[len(hs)-1].Headers["sec-websocket-protocol"] {
		if v != "voice.v1" {
			t.Errorf("the back end saw Sec-WebSocket-Protocol %q", v)
		}
	}
	// The REST path cost the back end one request per frame.
	if n := backendCounts(t, s.backend).Requests - before.Requests; n < int64(rest.Received) {
		t.Errorf("the back end saw %d requests, the page got %d answers to its POSTs", n, rest.Received)
	}
	for name, p := range got.Paths {
		if p.HandshakeMs == nil || p.P50 == nil || p.P99 == nil {
			t.Errorf("%s: page measured handshake %v, p50 %v, p99 %v", name, p.HandshakeMs, p.P50, p.P99)
		}
		for _, k := range []string{"handshake", "p50", "p99"} {
			if !strings.HasSuffix(p.Shown[k], " ms") {
				t.Errorf("%s: the page shows %s as %q, want a number of ms", name, k, p.Shown[k])
			}
		}
		if want := fmt.Sprintf("%d / %d", p.Received, p.Sent); p.Shown["count"] != want {
			t.Errorf("%s: the page shows %q frames, measured %s", name, p.Shown["count"], want)
		}
		if want := fmt.Sprint(p.Reordered); p.Shown["reordered"] != want {
			t.Errorf("%s: the page shows %q out of order, measured %s", name, p.Shown["reordered"], want)
		}
	}
	t.Logf("jitter %q: direct p50 %.2f ms p99 %.2f ms handshake %.2f ms, %d/%d in order; REST p50 %.2f ms p99 %.2f ms first POST %.2f ms, %d/%d back, %d out of order",
		got.Jitter, *direct.P50, *direct.P99, *direct.HandshakeMs, direct.Received, sent,
		*rest.P50, *rest.P99, *rest.HandshakeMs, rest.Received, sent, rest.Reordered)

	directOnly := url.Values{"frames": {"100"}, "paths": {"direct"}}
	got = b.run(demoPage(s, directOnly), "")
	if p := got.Paths["direct"]; p.State != "error" && p.State != "closed" || p.Received != 0 {
		t.Errorf("without a token: %+v", p)
	}

	// The drain contract in a browser: the back end sends Close 1001 with
	// its reconnect hint, and the page comes back and finishes its call.
	drained := make(chan error, 1)
	go func() {
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
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
	got = b.run(demoPage(s, url.Values{"frames": {"150"}, "paths": {"direct"}})+"#token="+validToken(t), "")
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	p := got.Paths["direct"]
	if p.State != "done" || p.Reconnects != 1 || p.Reordered != 0 || p.Received+p.LostAtGoAway != 150 {
		t.Errorf("a page sent Close 1001 by a draining back end: %+v, want it to reconnect once and finish", p)
	}
	t.Logf("the page reconnected after Close 1001: %d frames echoed, %d in flight at the close", p.Received, p.LostAtGoAway)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
