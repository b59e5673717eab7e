package voiceserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

func TestEchoInOrder(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(s.VoiceHandler())
	defer srv.Close()
	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/voice?call=1", &websocket.DialOptions{
		HTTPHeader:   http.Header{"X-Test": {"yes"}},
		Subprotocols: []string{"voice.v1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if conn.Subprotocol() != "voice.v1" {
		t.Errorf("subprotocol = %q", conn.Subprotocol())
	}
	for i := range 100 {
		msg := bytes.Repeat([]byte{byte(i)}, 640)
		if err := conn.Write(ctx, websocket.MessageBinary, msg); err != nil {
			t.Fatal(err)
		}
		typ, got, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if typ != websocket.MessageBinary || !bytes.Equal(got, msg) {
			t.Fatalf("frame %d came back changed", i)
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
	hs := s.Handshakes()
	if len(hs) != 1 || hs[0].Path != "/v1/voice?call=1" || hs[0].Headers["x-test"][0] != "yes" {
		t.Errorf("handshakes = %+v", hs)
	}
}

// TestEveryRefusalCloses: after any answer but a 101 on the voice port
// the back end closes the connection, so nothing unchecked can follow on
// it (regression: the demo page and 404s kept it open). The requests are
// upgrade requests, as a tcp mode route forwards them.
func TestEveryRefusalCloses(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(s.VoiceHandler())
	defer srv.Close()
	for _, path := range []string{"/v1/voice", "/", "/nowhere", "/debug/requests", "/index.html"} {
		for _, upgrade := range []bool{false, true} {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			if upgrade {
				// Not a handshake the library accepts: no key.
				req.Header.Set("Upgrade", "websocket")
				req.Header.Set("Connection", "Upgrade")
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusSwitchingProtocols || !resp.Close {
				t.Errorf("%s (upgrade %v): status %d, close %v: want an answer that closes the connection", path, upgrade, resp.StatusCode, resp.Close)
			}
		}
	}
}

func TestDemoPage(t *testing.T) {
	srv := httptest.NewServer(New(slog.Default()).VoiceHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "dp.bearer.") {
		t.Errorf("demo page: %d", resp.StatusCode)
	}
}

func TestREST(t *testing.T) {
	srv := httptest.NewServer(New(slog.Default()).RESTHandler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/api/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"ok"`) {
		t.Errorf("health: %d %s", resp.StatusCode, body)
	}
	for _, size := range []int{0, 5, 512, 640, 100000} {
		frame := bytes.Repeat([]byte{7}, size)
		resp, err = http.Post(srv.URL+"/api/echo", "application/octet-stream", bytes.NewReader(frame))
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Equal(body, frame) {
			t.Errorf("echo of %d bytes came back as %d", size, len(body))
		}
	}
}

func TestHandshakeMemoryIsBounded(t *testing.T) {
	s := New(slog.Default())
	for range 300 {
		s.handshakes.add(httptest.NewRequest("GET", "/v1/voice", nil))
		s.requests.add(httptest.NewRequest("GET", "/api/health", nil))
	}
	if n := len(s.Handshakes()); n != 64 {
		t.Errorf("kept %d handshakes, want 64", n)
	}
	if n := len(s.Requests()); n != 256 {
		t.Errorf("kept %d requests, want 256", n)
	}
}

// TestRequestsRecorded: every request on either port is recorded with its
// headers, underscore names as sent, and served at /debug/requests.
func TestRequestsRecorded(t *testing.T) {
	s := New(slog.Default())
	rest := httptest.NewServer(s.RESTHandler())
	defer rest.Close()
	req, _ := http.NewRequest("GET", rest.URL+"/api/health?row=7", nil)
	req.Header["X_Directpipe_Identity"] = []string{"admin"}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	resp, err = http.Get(rest.URL + "/debug/requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got []Handshake
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Path != "/api/health?row=7" || got[0].Method != "GET" {
		t.Fatalf("requests = %+v", got)
	}
	if v := got[0].Headers["x_directpipe_identity"]; len(v) != 1 || v[0] != "admin" {
		t.Errorf("headers = %v", got[0].Headers)
	}
}

// TestCountsOutliveTheRecent: /debug/counts counts every handshake and
// request, past the few the lists keep, so that a test can measure a
// split over hundreds of streams.
func TestCountsOutliveTheRecent(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(s.VoiceHandler())
	defer srv.Close()
	const n = 300
	for range n {
		resp, err := http.Get(srv.URL + "/v1/voice") // not an upgrade: recorded, refused
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	resp, err := http.Get(srv.URL + "/debug/counts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got Counts
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got != (Counts{Handshakes: n, Requests: n}) {
		t.Errorf("counts %+v, want %d of each", got, n)
	}
	if kept := len(s.Handshakes()); kept >= n {
		t.Errorf("kept %d handshakes; the list should be bounded", kept)
	}
}
