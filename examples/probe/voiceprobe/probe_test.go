package voiceprobe

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// echo answers every message unchanged; swap makes it send frames 1 and 2
// in the wrong order, and dropAfter stops echoing after that many.
func echo(swap bool, dropAfter int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		var held []byte
		for n := 0; ; n++ {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if dropAfter > 0 && n >= dropAfter {
				continue
			}
			if swap && n == 1 {
				held = msg
				continue
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
			if held != nil {
				c.Write(r.Context(), typ, held)
				held = nil
			}
		}
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name            string
		handler         http.HandlerFunc
		reordered, lost int
	}{
		{"clean", echo(false, 0), 0, 0},
		{"reordered", echo(true, 0), 1, 0},
		{"lossy", echo(false, 15), 0, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			res, err := Run(context.Background(), Config{
				URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Streams: 3, Frames: 20,
				Interval: time.Millisecond, Drain: 300 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			if res.Sent != 60 || res.Reordered != 3*tt.reordered || res.Lost != 3*tt.lost || res.Corrupted != 0 {
				t.Errorf("sent %d reordered %d lost %d corrupted %d; want 60 %d %d 0",
					res.Sent, res.Reordered, res.Lost, res.Corrupted, 3*tt.reordered, 3*tt.lost)
			}
			if res.RTT.Count != res.Received || res.Handshake.Count != 3 {
				t.Errorf("rtt samples %d, received %d, handshakes %d", res.RTT.Count, res.Received, res.Handshake.Count)
			}
		})
	}
}

func TestRunDialFailure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Config{URL: "ws" + strings.TrimPrefix(srv.URL, "http"), Streams: 2, Frames: 5})
	if err != nil {
		t.Fatal(err)
	}
	if res.FailedDials != 2 || res.Sent != 0 || !strings.Contains(res.Streams[0].Error, "401") {
		t.Errorf("failed dials %d sent %d error %q", res.FailedDials, res.Sent, res.Streams[0].Error)
	}
}

func TestReconnectHint(t *testing.T) {
	for _, tt := range []struct {
		reason string
		want   time.Duration
	}{
		{"reconnect jitter=500ms", 500 * time.Millisecond},
		{"jitter=2s reconnect", 2 * time.Second},
		{"reconnect", 0},
		{"reconnect jitter=-1s", 0},
		{"reconnect jitter=1h", 0}, // over the bound
		{"reconnect jitter=abc", 0},
	} {
		if got := ReconnectHint(tt.reason); got != tt.want {
			t.Errorf("ReconnectHint(%q) = %s, want %s", tt.reason, got, tt.want)
		}
	}
}
