package voiceserver

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestDrainSendsGoingAway: asked to drain, the back end ends every stream
// with Close 1001 and the reconnect hint within the window, counts them,
// and ends a stream that opens during the window too.
func TestDrainSendsGoingAway(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(s.VoiceHandler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/voice"
	dial := func() *websocket.Conn {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	conns := []*websocket.Conn{dial(), dial(), dial()}
	// The server counts a stream once it is accepted: wait for all three.
	for s.Streams().Live < 3 {
		time.Sleep(time.Millisecond)
	}
	resp, err := http.Post(srv.URL+"/debug/drain?window=300ms", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("drain: %v %v", resp, err)
	}
	resp.Body.Close()
	conns = append(conns, dial()) // opens during the window
	start := time.Now()
	for i, c := range conns {
		_, _, err := c.Read(ctx)
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "reconnect jitter=500ms" {
			t.Errorf("stream %d ended with %v, want Close 1001 \"reconnect jitter=500ms\"", i, err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the closes took %s for a 300ms window", d)
	}
	for s.Streams().Live > 0 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	if got := s.Streams(); got.Accepted != 4 || got.GoAways != 4 || got.Live != 0 {
		t.Errorf("counts = %+v, want 4 accepted, 4 sent away, none live", got)
	}
	resp, err = http.Post(srv.URL+"/debug/drain?window=-1s", "", nil)
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a negative window: %v %v, want 400", resp, err)
	}
}

// TestShedEndsOnlyN: asked to shed 2 of its 5 streams, the back end sends
// exactly 2 of them Close 1001; the other 3, and a stream that opens
// later, go on echoing.
func TestShedEndsOnlyN(t *testing.T) {
	s := New(slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv := httptest.NewServer(s.VoiceHandler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/voice"
	var conns []*websocket.Conn
	for range 5 {
		c, _, err := websocket.Dial(ctx, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		conns = append(conns, c)
	}
	for s.Streams().Live < 5 {
		time.Sleep(time.Millisecond)
	}
	resp, err := http.Post(srv.URL+"/debug/drain?streams=2&window=200ms", "", nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("shed: %v %v", resp, err)
	}
	resp.Body.Close()
	for s.Streams().GoAways < 2 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	later, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer later.CloseNow()
	goAways, echoes := 0, 0
	for i, c := range append(conns, later) {
		if err := c.Write(ctx, websocket.MessageBinary, []byte{byte(i)}); err != nil {
			goAways++ // closed by the shed
			continue
		}
		_, msg, err := c.Read(ctx)
		var ce websocket.CloseError
		switch {
		case errors.As(err, &ce) && ce.Code == websocket.StatusGoingAway:
			goAways++
		case err == nil && len(msg) == 1 && msg[0] == byte(i):
			echoes++
		default:
			t.Errorf("stream %d: %v %v", i, msg, err)
		}
	}
	if goAways != 2 || echoes != 4 {
		t.Errorf("%d streams sent away and %d echoing, want 2 and 4", goAways, echoes)
	}
	if got := s.Streams(); got.GoAways != 2 || got.Draining {
		t.Errorf("counts = %+v, want 2 sent away and not draining", got)
	}
	for _, q := range []string{"streams=-1", "streams=x", "streams=2000000"} {
		resp, err := http.Post(srv.URL+"/debug/drain?"+q, "", nil)
		if err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %v %v, want 400", q, resp, err)
		}
	}
}
