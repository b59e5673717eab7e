package e2e

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestApplyWaitsForEnvoysAnswer: a policy whose new tcp listener is on a
// port another process holds is valid, and Envoy rejects the whole LDS
// update. `dpctl policy apply` waits for the node's answer and exits 1
// with Envoy's reason; the listeners Envoy had keep serving; an apply
// Envoy takes exits 0 with the node's ACK.
func TestApplyWaitsForEnvoysAnswer(t *testing.T) {
	for _, flavour := range []string{"sotw", "delta"} {
		t.Run(flavour, func(t *testing.T) { applyWaitsForEnvoysAnswer(t, flavour == "delta") })
	}
}

func applyWaitsForEnvoysAnswer(t *testing.T, delta bool) {
	s := newStack(t, delta)
	s.waitStatus("SYNCED", "")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()

	write := func(routesYAML string) string {
		s.params.RoutesYAML = routesYAML
		var buf bytes.Buffer
		renderPolicy(t, s.params, &buf)
		file := filepath.Join(t.TempDir(), "next.yaml")
		if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	tcpRoute := "\n  - { name: voice-extra, kind: websocket, mode: tcp, tcp: { address: %q, raw: true }, backend: voice }"

	code, out, errs := s.dpctl("policy", "apply", "-f", write(fmt.Sprintf(tcpRoute, busy.Addr().String())), "--wait", "30s")
	t.Logf("dpctl policy apply, port in use (exit %d):\n%s%s", code, out, errs)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if !strings.Contains(errs, "rejected Listener") || !strings.Contains(strings.ToLower(errs), "address already in use") {
		t.Errorf("stderr does not give Envoy's reason: %s", errs)
	}
	if !strings.Contains(out, "NACKed Listener") {
		t.Errorf("stdout does not name the NACK: %s", out)
	}
	// Envoy keeps the listeners it had.
	if got := plainGet(t, s.listenURL("http", "/api/health"), nil); got != http.StatusOK {
		t.Errorf("REST after the NACK: %d", got)
	}

	// The control plane serves the rejected listener, so moving it counts
	// as replacing one (which Envoy never had: it drains nothing).
	free := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	code, out, errs = s.dpctl("policy", "apply", "-f", write(fmt.Sprintf(tcpRoute, free)), "--wait", "30s", "--allow-drain")
	t.Logf("dpctl policy apply, free port (exit %d):\n%s%s", code, out, errs)
	if code != 0 || !strings.Contains(out, ": ACKed") {
		t.Fatalf("exit %d, want 0 with the node's ACK", code)
	}
}
