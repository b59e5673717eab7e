package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/dpctl"
)

// TestDpctlApplyKeepsThePolicyAsWritten: an apply through the admin API
// stores the file's text as the user wrote it (comments, order,
// formatting), Envoy serves what it says, and `dpctl policy get` shows it
// back with its comments.
func TestDpctlApplyKeepsThePolicyAsWritten(t *testing.T) {
	s := newStack(t, false)
	s.waitStatus("SYNCED", "")
	rev, staged := s.stageRoutes(route{Name: "kept", Prefix: "/routes/kept"})
	body, err := os.ReadFile(staged)
	if err != nil {
		t.Fatal(err)
	}
	written := "# DEV SECRET: the HMAC key below is for development only.\n" +
		"# Rotate it before anything real connects.\n\n" +
		strings.Replace(string(body), "routes:", "routes:   # order and spacing are the author's", 1) +
		"\n# end of policy\n"
	if err := os.WriteFile(staged, []byte(written), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := s.dpctl("policy", "apply", "-f", staged, "--revision", rev); code != 0 {
		t.Fatalf("apply: exit %d\n%s%s", code, out, errs)
	}
	s.waitHTTP("/routes/kept", http.StatusOK, 5*time.Second)
	served, err := os.ReadFile(s.file)
	if err != nil {
		t.Fatal(err)
	}
	if string(served) != written {
		t.Errorf("the policy file is not the text applied:\n--- applied\n%s\n--- in the file\n%s", written, served)
	}
	code, got, errs := s.dpctl("policy", "get")
	if code != 0 || !strings.Contains(got, "# DEV SECRET: the HMAC key below is for development only.") || !strings.Contains(got, "# end of policy") {
		t.Errorf("policy get: exit %d %s\n%s", code, errs, got)
	}
}

// TestDpctlShowsARefusedPolicyEdit: a policy file edit the control plane
// refuses shows in `dpctl status` (with the field and its line) and as a
// policy_rejected event, while Envoy keeps serving the last good policy;
// a good edit clears it.
func TestDpctlShowsARefusedPolicyEdit(t *testing.T) {
	s := newStack(t, false)
	s.waitStatus("SYNCED", "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var events syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- dpctl.Run(ctx, []string{"--addr", s.cp.AdminAddr(), "--token", adminToken, "events"}, &events, &events)
	}()
	// A good edit first: its policy_applied event says the stream is open.
	s.params.ExtraRoutes = []route{{Name: "good", Prefix: "/routes/good"}}
	s.writePolicy()
	s.waitHTTP("/routes/good", http.StatusOK, 5*time.Second)
	waitFor(t, 10*time.Second, func() (bool, string) {
		return strings.Contains(events.String(), "policy_applied"), "the good edit's event"
	})

	var buf bytes.Buffer
	renderPolicy(t, s.params, &buf)
	bad := strings.Replace(buf.String(), "idle_timeout: 300s", `idle_timeout: "300"`, 1)
	if bad == buf.String() {
		t.Fatal("test setup: no idle_timeout in the stack's policy")
	}
	line := 1 + strings.Count(bad[:strings.Index(bad, `idle_timeout: "300"`)], "\n")
	writeAtomic(t, s.file, []byte(bad))

	wantErr := "idle_timeout: want a duration in seconds with the unit s"
	var status string
	waitFor(t, 10*time.Second, func() (bool, string) {
		_, status, _ = s.dpctl("status")
		return strings.Contains(status, "REFUSED"), "dpctl status to show the refused edit:\n" + status
	})
	for _, want := range []string{"policy from " + s.file + " REFUSED", "the last good policy keeps serving", wantErr, fmt.Sprintf("(line %d)", line)} {
		if !strings.Contains(status, want) {
			t.Errorf("dpctl status lacks %q:\n%s", want, status)
		}
	}
	waitFor(t, 10*time.Second, func() (bool, string) {
		return strings.Contains(events.String(), "policy_rejected"), "the policy_rejected event"
	})
	if ev := events.String(); !strings.Contains(ev, wantErr) {
		t.Errorf("the policy_rejected event lacks the reason:\n%s", ev)
	}
	// The last good policy still serves.
	s.waitHTTP("/routes/good", http.StatusOK, time.Second)

	// A good edit clears the refusal.
	s.params.ExtraRoutes = []route{{Name: "fixed", Prefix: "/routes/fixed"}}
	s.writePolicy()
	s.waitHTTP("/routes/fixed", http.StatusOK, 5*time.Second)
	if _, status, _ = s.dpctl("status"); strings.Contains(status, "REFUSED") {
		t.Errorf("dpctl status still shows a refusal after a good edit:\n%s", status)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("dpctl events exited %d", code)
	}
}
