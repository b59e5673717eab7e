package e2e

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestHTTP2KeepaliveClosesVanishedClients: two HTTP/2 clients each hold a
// WebSocket opened by extended CONNECT on a route whose idle timeout is
// five minutes. One stops answering Envoy's PINGs, as a client cut off
// by a network partition would (its kernel still acknowledges, nothing
// above it answers); Envoy closes its connection within the listener's
// keepalive bound (1 s interval, 1 s timeout here), and the back end
// loses that stream. The other answers, stays up well past the bound,
// and then carries frames.
func TestHTTP2KeepaliveClosesVanishedClients(t *testing.T) {
	s := newStack(t, false, func(p *policyParams) {
		p.ListenerLimits = "{ http2_keepalive_interval: 1s, http2_keepalive_timeout: 1s }"
	})
	s.waitStatus("SYNCED", "")
	tok := validToken(t)
	addr := s.params.Listen
	live := openRawH2WebSocket(t, addr, tok, true)
	vanished := openRawH2WebSocket(t, addr, tok, false)
	s.waitUpstreams(t, 2)

	// A bound, not a measure of speed: the route's idle timeout (300 s)
	// would otherwise hold the vanished client's call for minutes.
	select {
	case err := <-vanished.closed:
		t.Logf("the vanished client's connection ended %v after the first of %d unanswered PING(s) (bound: 1 s timeout): %v",
			time.Since(vanished.firstPing()).Round(time.Millisecond), vanished.pings.Load(), err)
	case <-time.After(30 * time.Second):
		t.Fatalf("Envoy still holds the connection of a client that answered none of %d PINGs", vanished.pings.Load())
	}
	if vanished.pings.Load() == 0 {
		t.Fatal("the connection ended without a PING from Envoy: something else closed it")
	}
	waitFor(t, 20*time.Second, func() (bool, string) {
		n := s.stat(t, "cluster.voice.upstream_cx_active")
		return n == 1, fmt.Sprintf("back-end connections: %d, want 1 (the live client's)", n)
	})
	waitFor(t, 20*time.Second, func() (bool, string) {
		n := s.stat(t, "http2.keepalive_timeout")
		return n >= 1, fmt.Sprintf("http2.keepalive_timeout = %d", n)
	})

	// The live client has answered PINGs for longer than the bound
	// (three PINGs are at least two intervals after the first).
	waitFor(t, 20*time.Second, func() (bool, string) {
		return live.pings.Load() >= 3, fmt.Sprintf("the live client answered %d PINGs", live.pings.Load())
	})
	select {
	case err := <-live.closed:
		t.Fatalf("the live client's connection ended: %v", err)
	default:
	}
	for i := range 5 {
		payload := bytes.Repeat([]byte{byte('a' + i)}, 100)
		got, err := live.echo(payload)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("live client, frame %d: echoed %q, %v", i, got, err)
		}
	}
}

// rawH2WebSocket is a WebSocket opened by extended CONNECT on a raw HTTP/2
// connection, so that the test decides whether PINGs are answered.
type rawH2WebSocket struct {
	conn   net.Conn
	fr     *http2.Framer
	answer bool
	// pings counts the PINGs Envoy sent; data carries stream 1's DATA
	// payloads; closed gets the reason the connection ended.
	pings  atomic.Int32
	first  atomic.Int64 // when the first PING came, unix nanoseconds
	data   chan []byte
	closed chan error
	mu     sync.Mutex // one frame written at a time
}

// openRawH2WebSocket opens an authenticated WebSocket at /v1/voice on
// addr by extended CONNECT over cleartext HTTP/2 and reads the
// connection's frames from then on, answering PINGs if answer is set.
func openRawH2WebSocket(t *testing.T, addr, tok string, answer bool) *rawH2WebSocket {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	w := &rawH2WebSocket{conn: c, fr: http2.NewFramer(c, c), answer: answer, data: make(chan []byte, 16), closed: make(chan error, 1)}
	w.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{
		{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "http"}, {":path", "/v1/voice"}, {":authority", addr},
		{"sec-websocket-version", "13"}, {"sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="}, {"authorization", "Bearer " + tok},
	} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := w.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for status := ""; status == ""; {
		f, err := w.fr.ReadFrame()
		if err != nil {
			t.Fatalf("extended CONNECT: %v", err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
			if status != "200" {
				t.Fatalf("extended CONNECT: status %s, want 200", status)
			}
		case *http2.GoAwayFrame, *http2.RSTStreamFrame:
			t.Fatalf("extended CONNECT: %v", f)
		default:
			w.serve(f)
		}
	}
	c.SetDeadline(time.Time{})
	go func() {
		for {
			f, err := w.fr.ReadFrame()
			if err != nil {
				w.closed <- err
				return
			}
			if d, ok := f.(*http2.DataFrame); ok && d.StreamID == 1 {
				w.data <- bytes.Clone(d.Data())
				continue
			}
			w.serve(f)
		}
	}()
	return w
}

// serve answers the connection-level frames a client must: SETTINGS,
// and PINGs if it answers them.
func (w *rawH2WebSocket) serve(f http2.Frame) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if !f.IsAck() {
			w.fr.WriteSettingsAck()
		}
	case *http2.PingFrame:
		if f.IsAck() {
			return
		}
		if w.pings.Add(1) == 1 {
			w.first.Store(time.Now().UnixNano())
		}
		if w.answer {
			w.fr.WritePing(true, f.Data)
		}
	}
}

// firstPing is when the first PING came (the zero time before one).
func (w *rawH2WebSocket) firstPing() time.Time {
	if ns := w.first.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// echo sends payload as one WebSocket frame and reads the back end's
// echo of it.
func (w *rawH2WebSocket) echo(payload []byte) ([]byte, error) {
	w.mu.Lock()
	err := w.fr.WriteData(1, false, clientFrame(payload))
	w.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var got bytes.Buffer
	deadline := time.After(10 * time.Second)
	for {
		if p, err := readFrame(bytes.NewReader(got.Bytes())); err == nil {
			return p, nil
		}
		select {
		case d := <-w.data:
			got.Write(d)
		case err := <-w.closed:
			return nil, fmt.Errorf("connection ended: %w", err)
		case <-deadline:
			return nil, fmt.Errorf("no echo; %d bytes so far: %q", got.Len(), strings.TrimSpace(got.String()))
		}
	}
}
