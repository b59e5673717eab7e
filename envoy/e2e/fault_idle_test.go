package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestIdleConnectionsAreClosed: on the HTTP listener, a connection with
// no request in flight is closed after the listener's
// connection_idle_timeout (2 s here, a minute by default): an HTTP/2
// connection that sent its preface and nothing more (no head, so no head
// timeout; it was held for 5 minutes), and HTTP/1.1 and HTTP/2
// connections kept open after one request; HTTP/2 PINGs do not keep one
// open. Authenticated WebSockets, over HTTP/1.1
// and by extended CONNECT over HTTP/2, that carry nothing for longer than
// that stay up and then carry frames: a WebSocket is a request in flight
// for its whole life, so the connection idle timeout never ends a call.
func TestIdleConnectionsAreClosed(t *testing.T) {
	const bound = 2 * time.Second
	s := newStack(t, false, func(p *policyParams) {
		p.ListenerLimits = "{ connection_idle_timeout: 2s }"
	})
	addr := s.params.Listen
	tok := validToken(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/voice", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + tok}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	echo := func(what string) {
		t.Helper()
		if err := ws.Write(ctx, websocket.MessageBinary, []byte(what)); err != nil {
			t.Fatalf("HTTP/1.1 WebSocket, %s: %v", what, err)
		}
		if _, got, err := ws.Read(ctx); err != nil || string(got) != what {
			t.Fatalf("HTTP/1.1 WebSocket, %s: echoed %q, %v", what, got, err)
		}
	}
	h2 := openH2WebSocket(ctx, t, s.listenURL("http", "/v1/voice"), tok)
	echo("before")
	h2.echo(t, []byte("before"))
	quiet := time.Now()

	// What Envoy should close, all opened after the WebSockets went quiet.
	preface := dialMany(t, addr, 20, h2Opening(t, false))
	// PINGs are not requests: they keep no connection open.
	pinging := dialMany(t, addr, 5, h2Opening(t, false))
	for _, c := range pinging {
		go func() {
			fr := http2.NewFramer(c, nil)
			for ctx.Err() == nil && fr.WritePing(false, [8]byte{}) == nil {
				time.Sleep(bound / 4)
			}
		}()
	}
	keepAlive := make([]net.Conn, 0, 20)
	h2KeepAlive := make([]net.Conn, 0, 20)
	for range cap(keepAlive) {
		keepAlive = append(keepAlive, afterOneRequest(t, addr))
		h2KeepAlive = append(h2KeepAlive, afterOneH2Request(t, addr))
	}
	start := time.Now()
	// A bound, not a measure of speed: before, the preface connections
	// were held for 5 minutes.
	deadline := start.Add(bound + 30*time.Second)
	groups := []struct {
		name  string
		conns []net.Conn
		open  int
		took  time.Duration
	}{{name: "HTTP/2 connections after their preface", conns: preface}, {name: "HTTP/1.1 connections after a request", conns: keepAlive},
		{name: "HTTP/2 connections after a request", conns: h2KeepAlive}, {name: "HTTP/2 connections that send only PINGs", conns: pinging}}
	var wg sync.WaitGroup
	for i := range groups {
		g := &groups[i]
		wg.Go(func() { g.open, g.took = stillOpen(g.conns, deadline), time.Since(start) })
	}
	wg.Wait()
	for _, g := range groups {
		if g.open != 0 {
			t.Errorf("%s: %d of %d still open after %v", g.name, g.open, len(g.conns), g.took.Round(time.Second))
			continue
		}
		// At the bound Envoy starts draining the connection (HTTP/2:
		// GOAWAY) and closes it after the connection manager's drain
		// timeout, 5 s, on both protocols.
		t.Logf("%s: all %d closed %v after they were opened (bound %v)", g.name, len(g.conns), g.took.Round(100*time.Millisecond), bound)
	}
	if t.Failed() {
		t.FailNow()
	}
	idle, err := s.envoy.Stat(ctx, "http.public.downstream_cx_idle_timeout")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len(preface) + len(keepAlive) + len(h2KeepAlive) + len(pinging)); idle < want {
		t.Errorf("http.public.downstream_cx_idle_timeout = %d, want at least %d: something else closed them", idle, want)
	}

	if since := time.Since(quiet); since <= bound {
		t.Fatalf("the WebSockets were quiet for %v only, not longer than the bound", since)
	}
	echo("after")
	h2.echo(t, []byte("after"))
}

// afterOneRequest sends one REST request on a new HTTP/1.1 connection,
// reads the whole answer and returns the connection, kept alive.
func afterOneRequest(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET /api/health HTTP/1.1\r\nHost: voice.local\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Close || r.Buffered() != 0 {
		t.Fatalf("GET /api/health: %d, close %v, %d bytes more", resp.StatusCode, resp.Close, r.Buffered())
	}
	c.SetDeadline(time.Time{})
	return c
}

// afterOneH2Request sends one REST request on a new HTTP/2 connection
// (prior knowledge), reads frames until its answer has ended and returns
// the connection, left open with no stream.
func afterOneH2Request(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/api/health"}, {":authority", "voice.local"}} {
		enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("HTTP/2 GET /api/health: %v", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.GoAwayFrame, *http2.RSTStreamFrame:
			t.Fatalf("HTTP/2 GET /api/health: %v", f)
		}
		if f.Header().StreamID == 1 && f.Header().Flags.Has(http2.FlagDataEndStream) {
			break
		}
	}
	c.SetDeadline(time.Time{})
	return c
}

// h2WebSocket is a WebSocket opened by extended CONNECT (RFC 8441) over
// cleartext HTTP/2.
type h2WebSocket struct {
	out  *io.PipeWriter
	body io.Reader
}

// openH2WebSocket opens an authenticated WebSocket over HTTP/2 at url,
// for as long as ctx lasts.
func openH2WebSocket(ctx context.Context, t *testing.T, url, tok string) *h2WebSocket {
	t.Helper()
	resp, pw := extendedConnect(ctx, t, h2cTransport(t), url, tok)
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("extended CONNECT: %d, want 200", resp.StatusCode)
	}
	return &h2WebSocket{out: pw, body: resp.Body}
}

// echo sends payload as one frame and reads it back.
func (w *h2WebSocket) echo(t *testing.T, payload []byte) {
	t.Helper()
	if _, err := w.out.Write(clientFrame(payload)); err != nil {
		t.Fatalf("HTTP/2 WebSocket: %v", err)
	}
	got, err := readFrame(w.body)
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("HTTP/2 WebSocket: echoed %q, %v; want %q", got, err, payload)
	}
}
