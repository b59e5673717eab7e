package voiceserver

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// The drain contract. Envoy cannot send a WebSocket Close frame, so only
// the back end can end a call cleanly. Asked to drain (POST /debug/drain,
// or SIGTERM to the command), the back end sends each of its streams Close
// 1001 (going away) with the reason "reconnect jitter=D", at a random
// moment of the drain window, so that its callers do not all come back at
// once; a caller reconnects after a random pause up to D and lands on
// another endpoint, since the control plane marked this one DRAINING.
// Streams that open during the window are ended the same way before it
// closes.
//
// Asked to shed (POST /debug/drain?streams=N, what the control plane's
// rebalance sends), the back end ends only N of its live streams, picked
// at random, the same way over the window, and goes on taking new ones:
// their callers reconnect to wherever the balancer now prefers.
const (
	// DefaultDrainWindow spreads the closes of a drain.
	DefaultDrainWindow = 5 * time.Second
	maxDrainWindow     = 10 * time.Minute
	// DefaultReconnectJitter is the pause the close reason asks callers to
	// spread their reconnects over.
	DefaultReconnectJitter = 500 * time.Millisecond
)

// live is the streams this back end holds now, and how many it accepted.
type live struct {
	mu       sync.Mutex
	streams  map[*stream]struct{}
	accepted int64
	goAways  int64
	// drainEnd is the end of the drain window; zero when not draining.
	drainEnd time.Time
}

type stream struct {
	goAway chan time.Duration // the delay before its Close 1001
}

func (l *live) add() *stream {
	st := &stream{goAway: make(chan time.Duration, 1)}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.streams == nil {
		l.streams = map[*stream]struct{}{}
	}
	l.streams[st] = struct{}{}
	l.accepted++
	if rest := time.Until(l.drainEnd); rest > 0 {
		st.goAway <- rand.N(rest)
	}
	return st
}

func (l *live) remove(st *stream) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.streams, st)
}

// StreamCounts is what the back end reports at /debug/streams.
type StreamCounts struct {
	Live     int   `json:"live"`
	Accepted int64 `json:"accepted"`
	GoAways  int64 `json:"go_aways"`
	Draining bool  `json:"draining"`
}

// Streams returns the back end's own counts.
func (s *Server) Streams() StreamCounts {
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	return StreamCounts{Live: len(l.streams), Accepted: l.accepted, GoAways: l.goAways, Draining: time.Now().Before(l.drainEnd)}
}

// Drain asks every live stream, and every stream that opens within
// window, to go away at a random moment of the window.
func (s *Server) Drain(window time.Duration) int {
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	l.drainEnd = time.Now().Add(window)
	n := 0
	for st := range l.streams {
		select {
		case st.goAway <- rand.N(window + 1):
			n++
		default: // already asked
		}
	}
	s.log.Info("draining: live streams will be sent Close 1001", "streams", n, "window", window)
	return n
}

// Shed asks n of the live streams (fewer if it holds fewer), picked at
// random, to go away at a random moment of window; streams that open later
// are left alone. It returns how many were asked.
func (s *Server) Shed(n int, window time.Duration) int {
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	asked := 0
	// Map iteration order is random: the first n not yet asked are a
	// random pick.
	for st := range l.streams {
		if asked == n {
			break
		}
		select {
		case st.goAway <- rand.N(window + 1):
			asked++
		default: // already asked
		}
	}
	s.log.Info("shedding: streams will be sent Close 1001", "streams", asked, "of", len(l.streams), "window", window)
	return asked
}

// maxShed bounds the streams one request may name.
const maxShed = 1_000_000

// serveDrain is POST /debug/drain?window=5s, or with streams=N a shed.
func (s *Server) serveDrain(w http.ResponseWriter, r *http.Request) {
	window := DefaultDrainWindow
	if v := r.URL.Query().Get("window"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > maxDrainWindow {
			http.Error(w, fmt.Sprintf("window %q: want a duration up to %s", v, maxDrainWindow), http.StatusBadRequest)
			return
		}
		window = d
	}
	var n int
	if v := r.URL.Query().Get("streams"); v != "" {
		shed, err := strconv.Atoi(v)
		if err != nil || shed < 0 || shed > maxShed {
			http.Error(w, fmt.Sprintf("streams %q: want a count from 0 to %d", v, maxShed), http.StatusBadRequest)
			return
		}
		n = s.Shed(shed, window)
	} else {
		n = s.Drain(window)
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"streams": n, "window": window.String()})
}

func (s *Server) serveStreams(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.Streams())
}

// goAwayAfter sends conn Close 1001 once st is asked to go away, after the
// delay it is given; it returns when ctx ends.
func (s *Server) goAwayAfter(ctx context.Context, conn *websocket.Conn, st *stream) {
	select {
	case <-ctx.Done():
		return
	case d := <-st.goAway:
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
	s.live.mu.Lock()
	s.live.goAways++
	s.live.mu.Unlock()
	conn.Close(websocket.StatusGoingAway, "reconnect jitter="+DefaultReconnectJitter.String())
}
