package voiceserver

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

// TestHeldEchoKeepsOrder: with simulated jitter a stream still echoes
// every frame in order, however the holds fall.
func TestHeldEchoKeepsOrder(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(s.VoiceHandler())
	defer srv.Close()
	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/v1/voice?jitter=5ms", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	const n = 50
	for i := range n {
		if err := conn.Write(ctx, websocket.MessageBinary, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		_, got, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, []byte{byte(i)}) {
			t.Fatalf("frame %d came back as %v", i, got)
		}
	}
}

func TestJitterBounds(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	rest := httptest.NewServer(s.RESTHandler())
	defer rest.Close()
	for _, tc := range []struct {
		query string
		want  int
	}{
		{"", http.StatusOK},
		{"?jitter=2ms", http.StatusOK},
		{"?jitter=1h", http.StatusBadRequest},
		{"?jitter=-1ms", http.StatusBadRequest},
		{"?jitter=soon", http.StatusBadRequest},
	} {
		resp, err := http.Post(rest.URL+"/api/echo"+tc.query, "", strings.NewReader("frame"))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%q: status %d (%s), want %d", tc.query, resp.StatusCode, body, tc.want)
		}
		if resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%q: no CORS header: the demo page could not read the answer", tc.query)
		}
		if tc.want == http.StatusOK && string(body) != "frame" {
			t.Errorf("%q: echoed %q", tc.query, body)
		}
	}
}
