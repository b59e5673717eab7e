//go:build linux

package latencylab

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// StormConfig sizes the reconnect storm.
type StormConfig struct {
	Clients int
	// Timeout bounds the whole storm of one path.
	Timeout time.Duration
}

// stormPaths are the paths cut and reconnected: ours and the peers.
var stormPaths = []string{"no-proxy", "direct", "tcp", "nginx", "haproxy"}

// Storm is what a path did when every client lost its stream at the same
// moment and dialled again at once.
type Storm struct {
	Path    string `json:"path"`
	Clients int    `json:"clients"`
	// Recovered clients streamed again (a frame echoed) before the timeout.
	Recovered int `json:"recovered"`
	// AllBack is from the cut to the last client's first echo; Back is the
	// distribution over clients.
	AllBack time.Duration      `json:"all_back_ns"`
	Back    voiceprobe.Summary `json:"back"`
	// Failures are dials or first echoes that failed and were retried.
	Failures int    `json:"failures"`
	Note     string `json:"note,omitempty"`
}

func (l *lab) storms(runners []pathRunner) []*Storm {
	var out []*Storm
	for _, r := range runners {
		if r.url == "" || !slices.Contains(stormPaths, r.name) {
			continue
		}
		s := l.storm(r)
		fmt.Fprintf(l.log, ">> storm %s: %d/%d back in %v, %d failures\n", r.name, s.Recovered, s.Clients, s.AllBack, s.Failures)
		out = append(out, s)
	}
	return out
}

// storm opens the clients' streams, waits until every one echoes, then
// cuts them all at once, as a network blip or a proxy failover would
// (each client drops its TCP connection without a close handshake), and
// times how long until every client streams again. Clients retry a failed
// dial every 10 ms, as an eager voice client would.
func (l *lab) storm(r pathRunner) *Storm {
	sc := l.cfg.Storm
	s := &Storm{Path: r.name, Clients: sc.Clients}
	ctx, cancel := context.WithTimeout(context.Background(), sc.Timeout)
	defer cancel()
	var (
		ready = make(chan struct{}, sc.Clients)
		cut   = make(chan struct{})
		cutAt time.Time
		mu    sync.Mutex
		backs []time.Duration
		wg    sync.WaitGroup
	)
	for range sc.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, fails := stormDial(ctx, r.url, r.header)
			if conn == nil {
				return
			}
			ready <- struct{}{}
			// Stream until the cut: one frame every interval.
			tick := time.NewTicker(l.cfg.Interval)
			defer tick.Stop()
			for alive := true; alive; {
				select {
				case <-cut:
					alive = false
				case <-ctx.Done():
					conn.CloseNow()
					return
				case <-tick.C:
					if echo(ctx, conn) != nil {
						fails++
					}
				}
			}
			conn.CloseNow()
			conn, more := stormDial(ctx, r.url, r.header)
			mu.Lock()
			defer mu.Unlock()
			s.Failures += fails + more
			if conn != nil {
				backs = append(backs, time.Since(cutAt))
				conn.CloseNow()
			}
		}()
	}
	for range sc.Clients {
		select {
		case <-ready:
		case <-ctx.Done():
			s.Note = "not every client streamed before the cut"
			cancel()
			wg.Wait()
			return s
		}
	}
	time.Sleep(200 * time.Millisecond)
	cutAt = time.Now()
	close(cut)
	wg.Wait()
	s.Recovered = len(backs)
	s.Back = voiceprobe.Summarize(backs)
	s.AllBack = s.Back.Max
	if s.Recovered < s.Clients {
		s.Note = fmt.Sprintf("%d clients not back within %v", s.Clients-s.Recovered, sc.Timeout)
	}
	return s
}

// stormDial dials until a stream echoes a frame or ctx ends, and counts
// the attempts that failed.
func stormDial(ctx context.Context, url string, h http.Header) (*websocket.Conn, int) {
	fails := 0
	for ctx.Err() == nil {
		conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
		if err == nil {
			if err = echo(ctx, conn); err == nil {
				return conn, fails
			}
			conn.CloseNow()
		}
		fails++
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil, fails
}

// echo sends one audio-sized frame and waits for it to come back.
func echo(ctx context.Context, conn *websocket.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	frame := make([]byte, voiceprobe.DefaultFrameBytes)
	if err := conn.Write(ctx, websocket.MessageBinary, frame); err != nil {
		return err
	}
	_, _, err := conn.Read(ctx)
	return err
}
