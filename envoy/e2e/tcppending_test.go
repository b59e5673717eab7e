package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
)

// TestTCPPendingHandshakeTakesTheLatestKeys: a tcp mode client that is
// still sending its head when a key rotation reaches Envoy is decided by
// the rotated keys, not the ones its connection was accepted under: the
// removed key is refused 401 and the back end receives nothing for it,
// the added key is let through. Envoy gives the route's network filter a
// new config for the rotation while the old one still holds the pending
// connections; both builds decide them by the latest.
func TestTCPPendingHandshakeTakesTheLatestKeys(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { testTCPPendingHandshakeTakesTheLatestKeys(t, build) })
	}
}

func testTCPPendingHandshakeTakesTheLatestKeys(t *testing.T, build testkit.FilterBuild) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{filter: build}, func(p *policyParams) { p.TCP = tcpAddr })
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	waitVersionMoved(t, s)

	newSecret := []byte("the-rotated-signing-key-32-bytes!")
	newToken := mint(t, newSecret, "rotated", jwt.MapClaims{"sub": "caller-2", "exp": time.Now().Add(time.Hour).Unix()})
	// Each head is sent but for its last line break: the module holds it.
	pending := func(row, token string) (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := net.DialTimeout("tcp", tcpAddr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(30 * time.Second))
		head := upgradeRequest("/v1/voice?row="+row, "Authorization: Bearer "+token)
		if _, err := io.WriteString(c, strings.TrimSuffix(head, "\r\n")); err != nil {
			t.Fatal(err)
		}
		return c, bufio.NewReader(c)
	}
	oldConn, oldR := pending("old-key", validToken(t))
	newConn, newR := pending("new-key", newToken)

	s.params.Keys = []jwk{{Kid: "rotated", K: b64url(newSecret)}}
	s.writePolicy()
	waitVersionMoved(t, s)

	finish := func(c net.Conn, r *bufio.Reader) int {
		t.Helper()
		if _, err := io.WriteString(c, "\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	// Envoy ACKs the new keys before every worker holds them: fresh
	// handshakes with the new key show when they do (several in a row, as
	// they spread over the workers).
	probe := 0
	eventuallyInARow(t, 4, func() (bool, string) {
		probe++
		c, r := pending(fmt.Sprintf("probe-%d", probe), newToken)
		code := finish(c, r)
		c.Close()
		return code == http.StatusSwitchingProtocols, fmt.Sprintf("a fresh handshake with the new key: %d", code)
	})
	if got := finish(oldConn, oldR); got != http.StatusUnauthorized {
		t.Errorf("the key removed while the head was pending: %d, want 401", got)
	}
	if got := finish(newConn, newR); got != http.StatusSwitchingProtocols {
		t.Errorf("the key added while the head was pending: %d, want 101", got)
	}
	for _, req := range backendRequests(t, s) {
		if strings.Contains(req.Path, "row=old-key") {
			t.Errorf("the back end received the removed key's handshake: %+v", req)
		}
	}
	s.checkTCPFilterBuild(build, contract.ReasonInvalidToken)
}
