package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/admin"
	"github.com/directpipe/directpipe/controlplane/policy"
)

const testToken = "test-admin-token"

// startApp runs a control plane on free loopback ports with a copy of the
// example policy.
func startApp(t *testing.T, policyFile string) (*App, adminv1.AdminServiceClient, *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a, err := New(ctx, Config{
		PolicyFile: policyFile, XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", AdminToken: testToken,
		// TestAdminRefusesMissingAndWrongTokens fails 35 times in a row.
		AdminAuthMaxDelay: time.Millisecond,
		WasmPath:          "/x.wasm", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	conn, err := grpc.NewClient(a.AdminAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return a, adminv1.NewAdminServiceClient(conn), conn
}

func copyExample(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)
}

func TestAdminRefusesMissingAndWrongTokens(t *testing.T) {
	_, client, conn := startApp(t, copyExample(t))
	calls := map[string]func(ctx context.Context) error{
		"ListNodes": func(ctx context.Context) error {
			_, err := client.ListNodes(ctx, &adminv1.ListNodesRequest{})
			return err
		},
		"GetPolicy": func(ctx context.Context) error {
			_, err := client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
			return err
		},
		"ValidatePolicy": func(ctx context.Context) error {
			_, err := client.ValidatePolicy(ctx, &adminv1.ValidatePolicyRequest{})
			return err
		},
		"ApplyPolicy": func(ctx context.Context) error {
			_, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{})
			return err
		},
		"GetConfig": func(ctx context.Context) error {
			_, err := client.GetConfig(ctx, &adminv1.GetConfigRequest{})
			return err
		},
		"WatchEvents": func(ctx context.Context) error {
			s, err := client.WatchEvents(ctx, &adminv1.WatchEventsRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		},
		"Health": func(ctx context.Context) error {
			_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		},
	}
	creds := map[string][]string{
		"missing":     nil,
		"wrong":       {"authorization", "Bearer nope"},
		"not bearer":  {"authorization", testToken},
		"longer":      {"authorization", "Bearer " + testToken + "x"},
		"two headers": {"authorization", "Bearer " + testToken, "authorization", "Bearer nope"},
	}
	for name, call := range calls {
		for cname, md := range creds {
			t.Run(name+"/"+cname, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if md != nil {
					ctx = metadata.AppendToOutgoingContext(ctx, md...)
				}
				if code := status.Code(call(ctx)); code != codes.Unauthenticated {
					t.Errorf("code = %s, want Unauthenticated", code)
				}
			})
		}
	}
}

func TestApplyRevisionsAndPersistence(t *testing.T) {
	file := copyExample(t)
	_, client, _ := startApp(t, file)
	ctx := authed(context.Background())

	got, err := client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	changed := proto.Clone(got.GetPolicy()).(*policyv1.Policy)
	changed.Backends[0].Endpoints = append(changed.Backends[0].Endpoints, "127.0.0.1:8091")

	dry, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: changed, ExpectedRevision: got.GetRevision(), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.GetChanges()) != 1 || dry.GetChanges()[0].GetType() != "ClusterLoadAssignment" {
		t.Errorf("dry run changes = %v, want the voice endpoints only", dry.GetChanges())
	}
	if again, _ := client.GetPolicy(ctx, &adminv1.GetPolicyRequest{}); again.GetRevision() != got.GetRevision() {
		t.Error("a dry run changed the revision")
	}

	applied, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: changed, ExpectedRevision: got.GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	if applied.GetRevision() == got.GetRevision() {
		t.Error("the revision did not move")
	}

	_, err = client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: got.GetPolicy(), ExpectedRevision: got.GetRevision()})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("stale apply: %v, want FailedPrecondition", err)
	}

	onDisk, err := policy.LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if policy.Revision(onDisk) != applied.GetRevision() {
		t.Error("the applied policy was not persisted to the policy file")
	}

	bad := proto.Clone(changed).(*policyv1.Policy)
	bad.Routes[0].Backend = "nowhere"
	_, err = client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: bad, ExpectedRevision: applied.GetRevision()})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("invalid apply: %v, want InvalidArgument", err)
	}
	v, err := client.ValidatePolicy(ctx, &adminv1.ValidatePolicyRequest{Policy: bad})
	if err != nil || len(v.GetErrors()) != 1 {
		t.Errorf("ValidatePolicy = %v, %v; want one error", v.GetErrors(), err)
	}
}

func TestRestartServesTheSamePolicy(t *testing.T) {
	file := copyExample(t)
	a, _, _ := startApp(t, file)
	_, rev := a.Policy()
	b, _, _ := startApp(t, file)
	if _, again := b.Policy(); again != rev {
		t.Errorf("revision after restart = %s, want %s", again, rev)
	}
	if a.XDS().Versions()["type.googleapis.com/envoy.config.listener.v3.Listener"] != b.XDS().Versions()["type.googleapis.com/envoy.config.listener.v3.Listener"] {
		t.Error("a restarted control plane would send different listener versions")
	}
}

func TestInvalidFileKeepsServing(t *testing.T) {
	file := copyExample(t)
	a, _, _ := startApp(t, file)
	_, rev := a.Policy()
	if err := os.WriteFile(file, []byte("routes: [ {name: broken"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // longer than the watch debounce
	if _, now := a.Policy(); now != rev {
		t.Errorf("an invalid file changed the served revision to %s", now)
	}
}

// TestKeySetRotationIsPushed: a key added to a policy's JWKS file reaches
// the filter config (ECDS) on the next refresh, with no policy change and
// no listener change.
func TestKeySetRotationIsPushed(t *testing.T) {
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	key := func(kid string) string {
		return `{"kty":"oct","kid":"` + kid + `","alg":"HS256","k":"ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi"}`
	}
	if err := os.WriteFile(jwksFile, []byte(`{"keys":[`+key("one")+`]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "policy.yaml")
	policyText := `
listeners: [{ name: public, address: "127.0.0.1:10000" }]
routes: [{ name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice, auth: files }]
backends: [{ name: voice, endpoints: ["127.0.0.1:8081"] }]
auth_policies:
  - name: files
    sources: [{ bearer: true }]
    jwt: { jwks_file: "` + jwksFile + `", audiences: [voice] }
`
	if err := os.WriteFile(file, []byte(policyText), 0o644); err != nil {
		t.Fatal(err)
	}
	a, _, _ := startApp(t, file)
	before := a.XDS().Versions()
	if err := os.WriteFile(jwksFile, []byte(`{"keys":[`+key("one")+`,`+key("two")+`]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	a.refreshKeys(context.Background())
	after := a.XDS().Versions()
	const ecds, lds = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig", "type.googleapis.com/envoy.config.listener.v3.Listener"
	if before[ecds] == after[ecds] {
		t.Error("a rotated key set did not change the filter config")
	}
	if before[lds] != after[lds] {
		t.Error("a key rotation changed a listener")
	}
	// A broken key file keeps the last good keys serving.
	os.WriteFile(jwksFile, []byte("not json"), 0o644)
	a.refreshKeys(context.Background())
	if a.XDS().Versions()[ecds] != after[ecds] {
		t.Error("a broken key file changed what is served")
	}
}

// TestApplyRefusedWhileTheFileHoldsAnEdit: an API apply rewrites the policy
// file, so it is refused while the file holds an operator's edit that is
// not served (not applied yet, or not loading), and the edit is kept. A
// symlinked policy file stays a link.
func TestApplyRefusedWhileTheFileHoldsAnEdit(t *testing.T) {
	example, err := os.ReadFile("../../examples/policy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(example), "routes:\n", "routes:\n  - { name: edited, match: { prefix: /edited/ }, kind: http, backend: rest }\n", 1)
	for _, tt := range []struct {
		name, edit, want string
	}{
		{"no edit", "", ""},
		{"reformatted", "# a comment\n" + string(example), ""},
		{"edit not applied yet", edited, "the policy file was changed since it was last loaded: it holds revision"},
		{"edit that does not load", "listeners: [", "and it does not load"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			real := filepath.Join(dir, "real.yaml")
			if err := os.WriteFile(real, example, 0o600); err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, "policy.yaml")
			if err := os.Symlink(real, file); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// No Run: no watcher applies the edit behind the test's back.
			a, err := New(ctx, Config{PolicyFile: file, XDSAddr: "127.0.0.1:0", WasmPath: "/x.wasm", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer a.closeListeners()
			if tt.edit != "" {
				if err := os.WriteFile(real, []byte(tt.edit), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			p, rev := a.Policy()
			p = proto.Clone(p).(*policyv1.Policy)
			p.Routes = p.Routes[:len(p.Routes)-1]
			_, _, err = a.Apply(ctx, p, nil, rev, false)
			if tt.want != "" {
				if !errors.Is(err, admin.ErrStaleRevision) || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("Apply: %v, want a stale-revision error containing %q", err, tt.want)
				}
				if got, _ := os.ReadFile(real); string(got) != tt.edit {
					t.Errorf("the operator's edit was overwritten")
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if info, err := os.Lstat(file); err != nil || info.Mode()&os.ModeSymlink == 0 {
				t.Errorf("the policy file's symlink was replaced by a file")
			}
			if got, err := policy.LoadFile(real); err != nil || !proto.Equal(got, p) {
				t.Errorf("the link's target does not hold the applied policy: %v", err)
			}
		})
	}
}

// TestStaleFileReadDoesNotUndoAnApply: the watcher reads the file, an API
// apply rewrites it, then the watcher's older read arrives. Serving it would
// silently revert the apply.
func TestStaleFileReadDoesNotUndoAnApply(t *testing.T) {
	file := copyExample(t)
	a, client, _ := startApp(t, file)
	ctx := authed(context.Background())
	got, err := client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	old := got.GetPolicy()
	changed := proto.Clone(old).(*policyv1.Policy)
	changed.Backends[0].Endpoints = append(changed.Backends[0].Endpoints, "127.0.0.1:8091")
	applied, err := client.ApplyPolicy(ctx, &adminv1.ApplyPolicyRequest{Policy: changed, ExpectedRevision: got.GetRevision()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.applyFromStore(context.Background(), old); err != nil {
		t.Fatalf("stale read: %v", err)
	}
	if _, rev := a.Policy(); rev != applied.GetRevision() {
		t.Errorf("serving %s after a stale file read, want the applied %s", rev, applied.GetRevision())
	}
}

// TestWarnsAboutReadableSecrets: a policy file with an HMAC key that
// others may read is warned about at start; after an apply through the
// API it is 0600.
func TestWarnsAboutReadableSecrets(t *testing.T) {
	file := copyExample(t) // 0644, with the demo HMAC key
	var logs strings.Builder
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, Config{
		PolicyFile: file, XDSAddr: "127.0.0.1:0", WasmPath: "/x.wasm",
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer a.closeListeners()
	if !strings.Contains(logs.String(), "holds secrets") {
		t.Errorf("no warning at start:\n%s", logs.String())
	}
	p, rev := a.Policy()
	p = proto.Clone(p).(*policyv1.Policy)
	p.Routes[0].IdleTimeout = nil
	if _, _, err := a.Apply(ctx, p, nil, rev, false); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("policy file is %o after an apply, want 600", info.Mode().Perm())
	}
}
