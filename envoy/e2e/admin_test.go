package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/dpctl"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// dpctlRun runs dpctl against the stack's control plane.
func (s *stack) dpctl(args ...string) (int, string, string) {
	s.t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{"--addr", s.cp.AdminAddr(), "--token", adminToken}, args...)
	code := dpctl.Run(context.Background(), full, &out, &errb)
	return code, out.String(), errb.String()
}

// stageRoutes returns the revision dpctl sees now and a policy file that
// adds routes to the stack's policy, for dpctl to apply.
func (s *stack) stageRoutes(routes ...route) (string, string) {
	s.t.Helper()
	code, got, errs := s.dpctl("policy", "get")
	if code != 0 {
		s.t.Fatal(errs)
	}
	rev := strings.TrimPrefix(strings.SplitN(got, "\n", 2)[0], "# revision: ")
	s.params.ExtraRoutes = routes
	var buf bytes.Buffer
	renderPolicy(s.t, s.params, &buf)
	file := filepath.Join(s.t.TempDir(), "next.yaml")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		s.t.Fatal(err)
	}
	return rev, file
}

// waitStatus polls `dpctl status -o json` until every type of the node is
// in state want (or, for one type, in typeWant).
func (s *stack) waitStatus(want string, only string) map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		code, out, errs := s.dpctl("-o", "json", "status")
		if code != 0 {
			s.t.Fatalf("dpctl status: %s", errs)
		}
		last = out
		var doc struct {
			Nodes []struct {
				Resources []map[string]any `json:"resources"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			s.t.Fatal(err)
		}
		if len(doc.Nodes) == 1 {
			ok := true
			var hit map[string]any
			for _, r := range doc.Nodes[0].Resources {
				if only != "" && r["type"] != only {
					continue
				}
				hit = r
				ok = ok && r["state"] == want
			}
			if ok && len(doc.Nodes[0].Resources) == 5 {
				return hit
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("node never reached %s (type %q):\n%s", want, only, last)
	return nil
}

func TestDpctlStatusSyncedAndNacked(t *testing.T) {
	s := newStack(t, false)
	s.waitStatus("SYNCED", "")
	code, table, _ := s.dpctl("status")
	if code != 0 || strings.Count(table, "SYNCED") != 5 {
		t.Fatalf("status table:\n%s", table)
	}
	t.Logf("dpctl status:\n%s", table)

	// A control plane that serves a corrupt Wasm module: Envoy must NACK
	// the filter config and keep running the last good one.
	corrupt := filepath.Join(t.TempDir(), "corrupt.wasm")
	if err := os.WriteFile(corrupt, []byte("\x00asm\x01\x00\x00\x00garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	xdsAddr := s.cp.XDSAddr()
	s.cp.Stop()
	s.cp = testkit.StartControlPlane(t, testkit.ControlPlaneOptions{
		PolicyFile: s.file, XDSAddr: xdsAddr, AdminToken: adminToken, WasmPath: corrupt,
	})
	nack := s.waitStatus("NACKED", "TypedExtensionConfig")
	if !strings.Contains(nack["last_nack"].(map[string]any)["error"].(string), "asm") &&
		!strings.Contains(strings.ToLower(nack["last_nack"].(map[string]any)["error"].(string)), "wasm") {
		t.Errorf("NACK error does not name the module: %v", nack["last_nack"])
	}
	code, table, _ = s.dpctl("status")
	if code != 0 || !strings.Contains(table, "NACKED") || !strings.Contains(table, "rejected ECDS") {
		t.Fatalf("status after NACK:\n%s", table)
	}
	t.Logf("dpctl status after a NACK:\n%s", table)
	// The previous config keeps serving: handshakes are still checked and
	// streams still flow.
	if resp, _ := upgrade(t, s.listenURL("http", "/v1/voice"), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token after NACK: %d, want 401 from the last good filter", resp.StatusCode)
	}
	res, err := voiceprobe.Run(context.Background(), voiceprobe.Config{
		URL: s.listenURL("ws", "/v1/voice"), Header: http.Header{"Authorization": {"Bearer " + validToken(t)}},
		Streams: 1, Frames: 100,
	})
	if err != nil || res.Received != 100 {
		t.Fatalf("voice after NACK: %v %+v", err, res)
	}
}

func TestDpctlApplySurvivesRestart(t *testing.T) {
	s := newStack(t, false)
	s.waitStatus("SYNCED", "")
	oldRev, newFile := s.stageRoutes(route{Name: "via-api", Prefix: "/routes/via-api"})
	code, diff, errs := s.dpctl("policy", "diff", "-f", newFile)
	// A route carries its auth policy in its metadata: adding one changes
	// the route table alone, not the filter config, and drains nothing.
	if code != 0 || !strings.Contains(diff, "~ RouteConfiguration public") || strings.Contains(diff, "TypedExtensionConfig") || strings.Contains(diff, "Listener") {
		t.Fatalf("diff (%s):\n%s", errs, diff)
	}
	code, applied, errs := s.dpctl("policy", "apply", "-f", newFile, "--revision", oldRev)
	if code != 0 {
		t.Fatalf("apply: %s", errs)
	}
	t.Logf("dpctl policy apply:\n%s", applied)
	s.waitHTTP("/routes/via-api", http.StatusOK, 5*time.Second)

	// The same apply again, on the old revision, is refused.
	code, _, errs = s.dpctl("policy", "apply", "-f", newFile, "--revision", oldRev)
	if code != 1 || !strings.Contains(errs, "policy changed since") {
		t.Errorf("stale apply: exit %d %q", code, errs)
	}

	// A restarted control plane serves the applied policy.
	_, rev := s.cp.Policy()
	xdsAddr := s.cp.XDSAddr()
	s.cp.Stop()
	s.cp = testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: s.file, XDSAddr: xdsAddr, AdminToken: adminToken})
	if _, again := s.cp.Policy(); again != rev {
		t.Errorf("revision after restart %s, want %s", again, rev)
	}
	s.waitStatus("SYNCED", "")
	s.waitHTTP("/routes/via-api", http.StatusOK, 5*time.Second)
}

func TestDpctlRefusesBadTokens(t *testing.T) {
	s := newStack(t, false)
	for _, args := range [][]string{{"status"}, {"nodes"}, {"policy", "get"}, {"config", "--node", "x"}} {
		var out, errb bytes.Buffer
		code := dpctl.Run(context.Background(), append([]string{"--addr", s.cp.AdminAddr(), "--token", "wrong"}, args...), &out, &errb)
		if code != 1 || !strings.Contains(errb.String(), "refused the token") {
			t.Errorf("%v with a wrong token: exit %d %q", args, code, errb.String())
		}
	}
}

// TestDpctlEventsFollowAPush watches the event stream while a policy
// changes: the apply, the pushes and Envoy's ACKs all appear.
func TestDpctlEventsFollowAPush(t *testing.T) {
	s := newStack(t, true)
	s.waitStatus("SYNCED", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- dpctl.Run(ctx, []string{"--addr", s.cp.AdminAddr(), "--token", adminToken, "events", "--follow"}, &out, &out)
	}()
	time.Sleep(200 * time.Millisecond) // let the stream open
	s.params.ExtraRoutes = []route{{Name: "evented", Prefix: "/routes/evented"}}
	s.writePolicy()
	s.waitHTTP("/routes/evented", http.StatusOK, 5*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	want := []string{"policy_applied", "snapshot_set", "pushed", "ack", "type=RouteConfiguration"}
	for time.Now().Before(deadline) {
		missing := false
		for _, w := range want {
			missing = missing || !strings.Contains(out.String(), w)
		}
		if !missing {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("dpctl events exited %d", code)
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Errorf("events lack %q:\n%s", w, out.String())
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
