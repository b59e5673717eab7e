package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestWebSocketOverHTTP2 opens a WebSocket by RFC 8441 extended CONNECT over
// cleartext HTTP/2 (h2c): Envoy accepts it on the same minimal upgrade
// chain, checks the token, and speaks HTTP/1.1 upgrade to the back end;
// with either build of the filter.
func TestWebSocketOverHTTP2(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { webSocketOverHTTP2(t, build) })
	}
}

func webSocketOverHTTP2(t *testing.T, build testkit.FilterBuild) {
	s := newStackWith(t, stackOptions{filter: build})
	tr := h2cTransport(t)
	open := func(token string) (*http.Response, *io.PipeWriter) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		return extendedConnect(ctx, t, tr, s.listenURL("http", "/v1/voice"), token)
	}

	resp, pw := open("")
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token over HTTP/2: %d, want 401", resp.StatusCode)
	}
	resp.Body.Close()
	pw.Close()

	resp, pw = open(validToken(t))
	defer resp.Body.Close()
	defer pw.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("extended CONNECT: %d, want 200", resp.StatusCode)
	}
	for i := range 50 {
		payload := bytes.Repeat([]byte{byte(i)}, 640)
		if _, err := pw.Write(clientFrame(payload)); err != nil {
			t.Fatal(err)
		}
		got, err := readFrame(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("frame %d came back changed", i)
		}
	}
	s.checkFilterBuild(build)
}

// h2cTransport speaks cleartext HTTP/2 (prior knowledge).
func h2cTransport(t *testing.T) *http2.Transport {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// extendedConnect opens a WebSocket at url by RFC 8441 extended CONNECT,
// with token as a bearer token unless empty, for as long as ctx lasts;
// the caller writes frames to the pipe and reads them from the answer.
func extendedConnect(ctx context.Context, t *testing.T, tr *http2.Transport, url, token string) (*http.Response, *io.PipeWriter) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	// RFC 8441 has no key; the HTTP/1.1 back end behind Envoy wants one.
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, pw
}

// clientFrame is a masked binary WebSocket frame (RFC 6455 §5.2).
func clientFrame(payload []byte) []byte {
	mask := [4]byte{1, 2, 3, 4}
	out := []byte{0x82}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	default:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	}
	out = append(out, mask[:]...)
	for i, b := range payload {
		out = append(out, b^mask[i%4])
	}
	return out
}

// readFrame reads one unmasked server frame and returns its payload.
func readFrame(r io.Reader) ([]byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(h[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(r, ext[:]); err != nil {
			return nil, err
		}
		n = int(binary.BigEndian.Uint16(ext[:]))
	case 127:
		return nil, fmt.Errorf("frame too large for the test")
	}
	payload := make([]byte, n)
	_, err := io.ReadFull(r, payload)
	return payload, err
}
