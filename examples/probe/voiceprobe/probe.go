// Package voiceprobe behaves like a voice agent's caller: it opens WebSocket
// streams, sends numbered, timestamped audio-sized frames in real time and
// measures what comes back from an echoing back end.
package voiceprobe

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// DefaultFrameBytes is 20 ms of 16 kHz, 16-bit, mono audio.
const DefaultFrameBytes = 640

// headerBytes is the frame prefix: sequence number and send time.
const headerBytes = 16

// Config describes one probe run.
type Config struct {
	URL          string
	Header       http.Header
	Subprotocols []string
	Streams      int
	// Frames is the number of frames each stream sends.
	Frames int
	// Interval between frames of one stream; 20ms is real time. Zero sends
	// as fast as the connection takes them.
	Interval   time.Duration
	FrameBytes int
	// Drain is how long a stream waits for its last echoes.
	Drain time.Duration
	// Progress, if set, is called as frames come back.
	Progress func(received, total int64)
	// Stop, if set, ends sending early when closed; Frames is then the
	// most each stream sends. Streams still wait for their echoes.
	Stop <-chan struct{}
	// Reconnect makes a stream the back end ends with Close 1001 (going
	// away) open again and go on with its next frame, after a random
	// pause up to the jitter the close reason names, else up to
	// ReconnectJitter.
	Reconnect       bool
	ReconnectJitter time.Duration
}

// StreamResult is what one stream saw.
type StreamResult struct {
	Handshake    time.Duration `json:"handshake_ns"`
	Sent         int           `json:"sent"`
	Received     int           `json:"received"`
	Reordered    int           `json:"reordered"`
	Duplicate    int           `json:"duplicate"`
	Lost         int           `json:"lost"`
	Corrupted    int           `json:"corrupted"`
	Disconnected bool          `json:"disconnected"`
	Error        string        `json:"error,omitempty"`
	// GoAways are the Close 1001 the back end sent this stream;
	// LostAtGoAway the frames in flight then, which Lost leaves out.
	GoAways      int `json:"go_aways,omitempty"`
	LostAtGoAway int `json:"lost_at_go_away,omitempty"`
	// Reconnects are the times from each Close 1001 to the next 101,
	// the pause included.
	Reconnects []time.Duration `json:"reconnects_ns,omitempty"`
}

// Result is a whole run.
type Result struct {
	Streams     []StreamResult `json:"streams"`
	RTT         Summary        `json:"rtt"`
	Handshake   Summary        `json:"handshake"`
	Sent        int            `json:"sent"`
	Received    int            `json:"received"`
	Reordered   int            `json:"reordered"`
	Lost        int            `json:"lost"`
	Corrupted   int            `json:"corrupted"`
	Disconnects int            `json:"disconnects"`
	FailedDials int            `json:"failed_dials"`
	WallTime    time.Duration  `json:"wall_ns"`
	rttSamples  []time.Duration
}

// Samples returns the round-trip times of every frame, sorted.
func (r *Result) Samples() []time.Duration { return r.rttSamples }

// Run opens cfg.Streams streams at once and runs them to the end.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Streams <= 0 || cfg.Frames <= 0 {
		return nil, errors.New("voiceprobe: streams and frames must be positive")
	}
	if cfg.FrameBytes == 0 {
		cfg.FrameBytes = DefaultFrameBytes
	}
	if cfg.FrameBytes < headerBytes {
		return nil, fmt.Errorf("voiceprobe: frames must be at least %d bytes", headerBytes)
	}
	if cfg.Drain == 0 {
		cfg.Drain = 5 * time.Second
	}
	base := time.Now() // monotonic clock origin for send stamps
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		res      = &Result{Streams: make([]StreamResult, cfg.Streams)}
		received atomic.Int64
		total    = int64(cfg.Streams * cfg.Frames)
	)
	for i := range cfg.Streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sr, rtts := runStream(ctx, cfg, base, func() {
				if n := received.Add(1); cfg.Progress != nil {
					cfg.Progress(n, total)
				}
			})
			mu.Lock()
			res.Streams[i] = sr
			res.rttSamples = append(res.rttSamples, rtts...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.WallTime = time.Since(base)
	var handshakes []time.Duration
	for _, s := range res.Streams {
		res.Sent += s.Sent
		res.Received += s.Received
		res.Reordered += s.Reordered
		res.Lost += s.Lost
		res.Corrupted += s.Corrupted
		if s.Disconnected {
			res.Disconnects++
		}
		if s.Handshake > 0 {
			handshakes = append(handshakes, s.Handshake)
		} else {
			res.FailedDials++
		}
	}
	res.RTT = Summarize(res.rttSamples)
	res.Handshake = Summarize(handshakes)
	return res, ctx.Err()
}

func runStream(ctx context.Context, cfg Config, base time.Time, onEcho func()) (StreamResult, []time.Duration) {
	var (
		sr   StreamResult
		seq  Sequence
		rtts = make([]time.Duration, 0, cfg.Frames)
		next int // the next frame's number, across reconnects
	)
	var closedAt time.Time
	for {
		start := time.Now()
		conn, _, err := websocket.Dial(ctx, cfg.URL, &websocket.DialOptions{
			HTTPHeader: cfg.Header, Subprotocols: cfg.Subprotocols,
		})
		if err != nil {
			if closedAt.IsZero() {
				sr.Error = fmt.Sprintf("dial: %v", err)
			} else {
				sr.Error = fmt.Sprintf("reconnect: %v", err)
				sr.Disconnected = true
			}
			break
		}
		if closedAt.IsZero() {
			sr.Handshake = time.Since(start)
		} else {
			sr.Reconnects = append(sr.Reconnects, time.Since(closedAt))
		}
		seg := runSegment(ctx, cfg, base, conn, &next, &seq, &rtts, onEcho, &sr)
		if seg.goAway == nil || !cfg.Reconnect || next >= cfg.Frames || ctx.Err() != nil {
			break
		}
		// The back end is going away and asked its callers to come back:
		// after a random pause, so that its streams do not all land on the
		// other back ends at the same instant.
		closedAt = seg.goAway.at
		select {
		case <-time.After(jitter(seg.goAway.jitter, cfg.ReconnectJitter)):
		case <-ctx.Done():
		}
	}
	sr.Received, sr.Reordered, sr.Duplicate = seq.Received, seq.Reordered, seq.Duplicate
	sr.Lost = seq.Lost(sr.Sent) - sr.LostAtGoAway
	return sr, rtts
}

// goAway is a Close 1001 from the back end: when it came, and the
// reconnect jitter its reason asked for (0: none asked).
type goAway struct {
	at     time.Time
	jitter time.Duration
}

type segment struct {
	goAway *goAway
}

// runSegment runs one connection of a stream: it sends frames from *next
// until every frame is sent or the back end closes, then waits for the
// echoes.
func runSegment(ctx context.Context, cfg Config, base time.Time, conn *websocket.Conn, next *int, seq *Sequence,
	rtts *[]time.Duration, onEcho func(), sr *StreamResult) segment {
	defer conn.CloseNow()
	conn.SetReadLimit(int64(cfg.FrameBytes) * 4)
	var (
		done      = make(chan struct{})
		rerr      error
		echoed    atomic.Int64
		corrupted int
		away      *goAway
		mu        sync.Mutex // guards seq and rtts against the reader
	)
	// The reader runs until the connection ends; the sender decides when
	// that is, once every frame came back or the drain time ran out.
	go func() {
		defer close(done)
		for {
			_, msg, err := conn.Read(ctx)
			if err != nil {
				rerr = err
				var ce websocket.CloseError
				if errors.As(err, &ce) && ce.Code == websocket.StatusGoingAway {
					away = &goAway{at: time.Now(), jitter: ReconnectHint(ce.Reason)}
				}
				return
			}
			if len(msg) != cfg.FrameBytes {
				corrupted++
				continue
			}
			n := binary.BigEndian.Uint64(msg[0:8])
			sentAt := time.Duration(binary.BigEndian.Uint64(msg[8:16]))
			if !bytes.Equal(msg[headerBytes:], payload(n, cfg.FrameBytes)) {
				corrupted++
				continue
			}
			mu.Lock()
			*rtts = append(*rtts, time.Since(base)-sentAt)
			seq.Observe(n)
			mu.Unlock()
			echoed.Add(1)
			onEcho()
		}
	}()

	frame := make([]byte, cfg.FrameBytes)
	var tick *time.Ticker
	if cfg.Interval > 0 {
		tick = time.NewTicker(cfg.Interval)
		defer tick.Stop()
	}
	sent := 0
	readerEnded := false
send:
	for *next < cfg.Frames {
		i := *next
		binary.BigEndian.PutUint64(frame[0:8], uint64(i))
		binary.BigEndian.PutUint64(frame[8:16], uint64(time.Since(base)))
		copy(frame[headerBytes:], payload(uint64(i), cfg.FrameBytes))
		if err := conn.Write(ctx, websocket.MessageBinary, frame); err != nil {
			// A write that races the back end's close is not a frame sent.
			select {
			case <-done:
				readerEnded = true
			case <-time.After(time.Second):
			}
			if readerEnded && away != nil {
				break send
			}
			sr.Error = fmt.Sprintf("write: %v", err)
			sr.Disconnected = true
			break
		}
		*next = i + 1
		sent++
		sr.Sent++
		if tick != nil && *next < cfg.Frames {
			select {
			case <-tick.C:
			case <-ctx.Done():
				break send
			case <-done:
				readerEnded = true
				break send // the read side ended: the stream is gone
			case <-cfg.Stop:
				break send
			}
		}
	}
	if !readerEnded {
		deadline := time.Now().Add(cfg.Drain)
		for echoed.Load() < int64(sent) && time.Now().Before(deadline) {
			select {
			case <-done:
				deadline = time.Now()
			case <-time.After(2 * time.Millisecond):
			}
		}
		select {
		case <-done:
			readerEnded = true
		default:
			conn.Close(websocket.StatusNormalClosure, "probe done")
			<-done
		}
	}
	sr.Corrupted += corrupted
	missing := int64(sent) - echoed.Load()
	switch {
	case away != nil:
		// Frames in flight when the back end closed are the back end's to
		// account for: it chose to end the call there.
		sr.GoAways++
		sr.LostAtGoAway += int(max(missing, 0))
	case readerEnded && missing > 0:
		sr.Disconnected = true
		if sr.Error == "" {
			sr.Error = fmt.Sprintf("read: %v", rerr)
		}
	}
	return segment{goAway: away}
}

// ReconnectHint reads the reconnect jitter a back end's Close 1001 reason
// asks for ("reconnect jitter=500ms"); 0 when it names none.
func ReconnectHint(reason string) time.Duration {
	for _, f := range strings.Fields(reason) {
		if v, ok := strings.CutPrefix(f, "jitter="); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 && d <= maxReconnectJitter {
				return d
			}
		}
	}
	return 0
}

// maxReconnectJitter bounds the pause a back end may ask for.
const maxReconnectJitter = time.Minute

// jitter is a random pause up to the hint, or up to the configured bound
// when the back end gave none.
func jitter(hint, def time.Duration) time.Duration {
	if hint == 0 {
		hint = def
	}
	if hint <= 0 {
		return 0
	}
	return rand.N(hint)
}

// payload is the deterministic body of frame seq, so the probe can tell an
// intact echo from a damaged one without keeping what it sent.
func payload(seq uint64, frameBytes int) []byte {
	p := make([]byte, frameBytes-headerBytes)
	for i := range p {
		p[i] = byte(seq*31 + uint64(i)*7)
	}
	return p
}

// Handshake opens one stream, closes it, and returns how long the opening
// took: TCP connect, upgrade request, any check on the way, 101.
func Handshake(ctx context.Context, url string, h http.Header) (time.Duration, error) {
	start := time.Now()
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return 0, err
	}
	d := time.Since(start)
	conn.Close(websocket.StatusNormalClosure, "")
	return d, nil
}
