package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestApplyRefusesDrainingChange: a policy change that adds a listener or
// makes a tcp route raw (no auth, no module) goes through LDS. dpctl policy
// diff says which listeners it updates and how many connections each holds
// (from the stats Envoy streams to the control plane). A listener that is
// only added drains nothing and applies as it is; making the route raw
// replaces a listener: apply refuses it without --allow-drain, changing
// nothing, and applies it with.
func TestApplyRefusesDrainingChange(t *testing.T) {
	s, addr := newTCPStack(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A live call on the tcp route.
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/v1/voice", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + validToken(t)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()

	var served strings.Builder
	renderPolicy(t, s.params, &served)
	rawLine := fmt.Sprintf(`  - { name: voice-raw, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: voice, auth: demo }`, addr)
	if !strings.Contains(served.String(), rawLine) {
		t.Fatalf("the stack's policy has no line %q", rawLine)
	}
	extra := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	write := func(policy string) string {
		f := fmt.Sprintf("%s/next-%d.yaml", t.TempDir(), time.Now().UnixNano())
		if err := os.WriteFile(f, []byte(policy), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	addListener := write(strings.Replace(served.String(), rawLine,
		rawLine+fmt.Sprintf("\n  - { name: extra-raw, kind: websocket, mode: tcp, tcp: { address: %q, raw: true }, backend: voice }", extra), 1))

	t.Run("a new listener", func(t *testing.T) {
		code, out, errs := s.dpctl("policy", "diff", "-f", addListener)
		if code != 0 || !strings.Contains(out, "+ tcp-extra-raw: new, drains nothing") || strings.Contains(out, "--allow-drain") {
			t.Fatalf("diff: exit %d, %s\n%s", code, errs, out)
		}
		// A listener that is only added drains nothing: no consent needed.
		if code, out, errs := s.dpctl("policy", "apply", "-f", addListener); code != 0 || !strings.Contains(out, "applied") {
			t.Fatalf("apply of a new listener: exit %d, %s\n%s", code, errs, out)
		}
		if err := testkit.WaitListening(extra, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	// The same policy, now served, with the tcp route raw (no auth, no
	// module): its listener's network filters change.
	noAuth := write(strings.Replace(mustRead(t, addListener), rawLine, strings.Replace(rawLine, `" }, backend: voice, auth: demo }`, `", raw: true }, backend: voice }`, 1), 1))

	t.Run("a tcp route made raw", func(t *testing.T) {
		// Envoy streams its stats every 5 s: wait until the diff shows the call.
		var out string
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			var code int
			var errs string
			code, out, errs = s.dpctl("policy", "diff", "-f", noAuth)
			if code != 0 {
				t.Fatalf("diff: exit %d, %s", code, errs)
			}
			if strings.Contains(out, fmt.Sprintf("~ tcp-voice-raw (%s): drains 1 connection now (%s 1)", addr, s.envoyNode())) || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("dpctl policy diff:\n%s", out)
		for _, want := range []string{
			fmt.Sprintf("~ tcp-voice-raw (%s): drains 1 connection now", addr),
			"- directpipe-deny: drains its connections (no node reports how many)",
			"applying it needs --allow-drain",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("diff lacks %q:\n%s", want, out)
			}
		}
		modified, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
		if err != nil {
			t.Fatal(err)
		}
		code, _, errs := s.dpctl("policy", "apply", "-f", noAuth)
		if code != 1 || !strings.Contains(errs, "tcp-voice-raw (modified, drains 1 connection(s) now)") {
			t.Fatalf("apply without --allow-drain: exit %d, %s", code, errs)
		}
		t.Logf("dpctl policy apply:\n%s", errs)
		if n, _ := s.envoy.Stat(ctx, "listener_manager.listener_modified"); n != modified {
			t.Fatalf("a refused apply modified a listener (%d -> %d)", modified, n)
		}
		if code, out, errs := s.dpctl("policy", "apply", "-f", noAuth, "--allow-drain"); code != 0 || !strings.Contains(out, "applied") {
			t.Fatalf("apply --allow-drain: exit %d, %s\n%s", code, errs, out)
		}
		if err := s.envoy.WaitStat(ctx, "listener_manager.listener_modified", func(v int64) bool { return v > modified }); err != nil {
			t.Fatal(err)
		}
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// envoyNode is the node id the stack's Envoy reports.
func (s *stack) envoyNode() string {
	for _, n := range s.cp.Status().Nodes() {
		return n.ID
	}
	return ""
}
