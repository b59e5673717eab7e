package voiceserver

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/coder/websocket"
)

// Simulated network jitter, for the demo page only: with ?jitter=D on a
// stream's URL or on a REST request, the back end holds each reply a
// random 0..D before sending it. The same rule on both paths shows the
// structural difference a real network makes: on one stream, as on one
// TCP connection, a late frame holds back the frames behind it and the
// order is kept; independent requests each wait on their own and overtake
// one another. Without the parameter nothing is held.
const maxJitter = 200 * time.Millisecond

// jitterOf reads ?jitter= from a request: zero when absent, an error when
// it is not a duration in [0, maxJitter].
func jitterOf(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("jitter")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > maxJitter {
		return 0, fmt.Errorf("jitter %q: want a duration from 0 to %v", v, maxJitter)
	}
	return d, nil
}

func hold(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max + 1)
}

// heldEcho echoes a stream's messages in order, each sent no earlier than
// its arrival plus a random hold of up to max: a frame due before the one
// ahead of it waits for that one, as bytes on one connection do.
func heldEcho(ctx context.Context, conn *websocket.Conn, max time.Duration) error {
	type due struct {
		typ websocket.MessageType
		msg []byte
		at  time.Time
	}
	// Bounded: a client that sends faster than the holds drain is slowed
	// down by the reader blocking, not buffered without end.
	queue := make(chan due, 256)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	written := make(chan error, 1)
	go func() {
		for {
			select {
			case <-ctx.Done():
				written <- ctx.Err()
				return
			case d := <-queue:
				if !sleep(ctx, time.Until(d.at)) {
					written <- ctx.Err()
					return
				}
				if err := conn.Write(ctx, d.typ, d.msg); err != nil {
					written <- err
					return
				}
			}
		}
	}()
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			cancel()
			<-written
			return err
		}
		select {
		case queue <- due{typ, msg, time.Now().Add(hold(max))}:
		case err := <-written:
			return err
		}
	}
}

// sleep waits d, or less if ctx ends first; it reports whether ctx is
// still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
