package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// slowHead is a connection that has sent the start of an upgrade request
// and holds the rest back.
type slowHead struct {
	c      net.Conn
	target string
}

// startSlowHeads opens n connections to addr that each send the request
// line and Host of an upgrade, and no more.
func startSlowHeads(t *testing.T, addr string, n int) []slowHead {
	t.Helper()
	conns := dialMany(t, addr, n, "GET /v1/voice HTTP/1.1\r\nHost: voice.local\r\n")
	out := make([]slowHead, len(conns))
	for i, c := range conns {
		out[i] = slowHead{c: c, target: addr}
	}
	return out
}

// finish sends the rest of the upgrade, with the token, and returns the
// status Envoy answered (0 when the connection ended without an answer).
func (h slowHead) finish(tok string) (int, error) {
	h.c.SetDeadline(time.Now().Add(10 * time.Second))
	rest := "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
		"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer " + tok + "\r\n\r\n"
	if _, err := io.WriteString(h.c, rest); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(h.c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// finishAll finishes every head at once with tok and returns, per status,
// how many got it (-1 for no answer) and one error seen.
func finishAll(heads []slowHead, tok string) (map[int]int, error) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	got := map[int]int{}
	var firstErr error
	for _, h := range heads {
		wg.Go(func() {
			status, err := h.finish(tok)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				status = -1
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", h.target, err)
				}
			}
			got[status]++
		})
	}
	wg.Wait()
	return got, firstErr
}

// TestSlowHeadsAcrossAPolicyPush holds handshakes half-sent on both
// listeners while a key change is pushed (ECDS, no listener touched), then
// finishes them. A head that began before the push is decided by the
// policy in force when it ends: a key added by the push lets it in, a key
// the push removed does not (a revocation holds at once, also for callers
// that were slow to send), and no handshake is refused for a plugin that
// went away under it.
func TestSlowHeadsAcrossAPolicyPush(t *testing.T) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStack(t, false, func(p *policyParams) { p.TCP = tcpAddr })
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	s.waitStatus("SYNCED", "")
	httpAddr := s.params.Listen
	oldTok := validToken(t)
	rotated := []byte("the-rotated-signing-key-32-bytes!")
	newTok := mint(t, rotated, "rotated", jwt.MapClaims{"sub": "caller-2", "exp": time.Now().Add(time.Hour).Unix()})
	st := startStreams(t, oldTok, 1, "ws://"+httpAddr+"/v1/voice", "ws://"+tcpAddr+"/v1/voice")
	s.waitUpstreams(t, st.n)

	const n = 20
	// push changes the keys and waits until new connections on both
	// listeners see the change (Envoy ACKs a config before every worker
	// runs it): tok then gets status.
	push := func(tok string, status int, keys ...jwk) {
		t.Helper()
		s.params.Keys = keys
		s.writePolicy()
		waitVersionMoved(t, s)
		for _, addr := range []string{httpAddr, tcpAddr} {
			eventually(t, func() (bool, string) {
				got := rawExchange(t, addr, upgradeRequest("/v1/voice", "Authorization: Bearer "+tok))
				return got.status == status, fmt.Sprintf("%s after the push: %d %s", addr, got.status, got.body)
			})
		}
	}
	check := func(name string, heads []slowHead, tok string, want int) {
		t.Helper()
		got, err := finishAll(heads, tok)
		if got[want] != len(heads) {
			t.Errorf("%s: answers %v (status: count), want %d for all %d; %v", name, got, want, len(heads), err)
		}
	}

	// A key added: heads begun before it finish with a token it signs.
	tcpHeads, httpHeads := startSlowHeads(t, tcpAddr, 2*n), startSlowHeads(t, httpAddr, 2*n)
	push(newTok, http.StatusSwitchingProtocols, devKey(), jwk{Kid: "rotated", K: b64url(rotated)})
	check("tcp, a key added while the head was sent, new token", tcpHeads[:n], newTok, http.StatusSwitchingProtocols)
	check("tcp, a key added while the head was sent, old token", tcpHeads[n:], oldTok, http.StatusSwitchingProtocols)
	check("http, a key added while the head was sent, new token", httpHeads[:n], newTok, http.StatusSwitchingProtocols)
	check("http, a key added while the head was sent, old token", httpHeads[n:], oldTok, http.StatusSwitchingProtocols)

	// A key removed: heads begun before the revocation are refused with it.
	tcpHeads, httpHeads = startSlowHeads(t, tcpAddr, 2*n), startSlowHeads(t, httpAddr, 2*n)
	push(oldTok, http.StatusUnauthorized, jwk{Kid: "rotated", K: b64url(rotated)})
	check("tcp, a key removed while the head was sent, removed key", tcpHeads[:n], oldTok, http.StatusUnauthorized)
	check("tcp, a key removed while the head was sent, kept key", tcpHeads[n:], newTok, http.StatusSwitchingProtocols)
	check("http, a key removed while the head was sent, removed key", httpHeads[:n], oldTok, http.StatusUnauthorized)
	check("http, a key removed while the head was sent, kept key", httpHeads[n:], newTok, http.StatusSwitchingProtocols)

	// The streams opened before both pushes carry on: a stream is checked
	// once, at its handshake.
	st.end(t)
	if s.envoyLogHas(t, vmTrap) {
		t.Errorf("the VM overflowed its stack")
	}
}
