package dpctl

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

const token = "secret-token"

// fake answers with canned data and checks the token like the real one.
type fake struct {
	adminv1.UnimplementedAdminServiceServer
	revision string
	applied  *adminv1.ApplyPolicyRequest
}

func (f *fake) auth(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+token {
		return status.Error(codes.Unauthenticated, "no")
	}
	return nil
}

func (f *fake) ListNodes(ctx context.Context, _ *adminv1.ListNodesRequest) (*adminv1.ListNodesResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	res := []*adminv1.ResourceStatus{
		{Type: "Cluster", State: adminv1.SyncState_SYNCED, AckedVersion: "aaaaaaaaaaaa"},
		{Type: "ClusterLoadAssignment", State: adminv1.SyncState_SYNCED, AckedVersion: "bbbbbbbbbbbb"},
		{Type: "Listener", State: adminv1.SyncState_SYNCED, AckedVersion: "cccccccccccc"},
		{Type: "RouteConfiguration", State: adminv1.SyncState_STALE},
		{Type: "TypedExtensionConfig", State: adminv1.SyncState_NACKED, LastNack: &adminv1.Nack{Version: "dddd", Error: "Failed to load Wasm module"}},
	}
	return &adminv1.ListNodesResponse{Nodes: []*adminv1.Node{{
		Id: "envoy-1", Cluster: "edge", EnvoyVersion: "1.40.0", XdsFlavour: "sotw", Connected: true, Filter: "wasm",
		ConnectedSince: timestamppb.Now(), LastSeen: timestamppb.Now(), Resources: res,
		Wasm: &adminv1.WasmHealth{Reloads: 2, LastFailure: timestamppb.New(time.Date(2026, 12, 5, 12, 14, 29, 0, time.UTC))},
	}, {
		Id: "envoy-2", Cluster: "edge", EnvoyVersion: "1.40.0", XdsFlavour: "sotw", Connected: true,
		ConnectedSince: timestamppb.Now(), LastSeen: timestamppb.Now(), Resources: res,
		Wasm: &adminv1.WasmHealth{Reloads: 1, Failures: 3, Failing: true, LastFailure: timestamppb.New(time.Date(2026, 12, 5, 12, 15, 0, 0, time.UTC))},
	}, {
		Id: "envoy-3", Cluster: "edge", EnvoyVersion: "1.40.0", XdsFlavour: "sotw", Connected: true,
		ConnectedSince: timestamppb.Now(), LastSeen: timestamppb.Now(), Resources: res, Wasm: &adminv1.WasmHealth{},
	}, {
		Id: "envoy-4", Cluster: "edge", EnvoyVersion: "1.40.0", XdsFlavour: "delta", Connected: true, Filter: "native",
		ConnectedSince: timestamppb.Now(), LastSeen: timestamppb.Now(), Resources: res,
	}}}, nil
}

func (f *fake) GetPolicy(ctx context.Context, _ *adminv1.GetPolicyRequest) (*adminv1.GetPolicyResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	return &adminv1.GetPolicyResponse{Revision: f.revision, Policy: &policyv1.Policy{
		Listeners: []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}},
	}}, nil
}

func (f *fake) ApplyPolicy(ctx context.Context, req *adminv1.ApplyPolicyRequest) (*adminv1.ApplyPolicyResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	if req.GetExpectedRevision() != f.revision {
		return nil, status.Error(codes.FailedPrecondition, "policy changed since the expected revision")
	}
	f.applied = req
	return &adminv1.ApplyPolicyResponse{Revision: "next", DryRun: req.GetDryRun(), Changes: []*adminv1.ResourceChange{
		{Type: "RouteConfiguration", Name: "public", Action: adminv1.ResourceChange_MODIFIED},
	}}, nil
}

func startFake(t *testing.T) (*fake, []string) {
	t.Helper()
	f := &fake{revision: "rev1"}
	return f, serveFake(t, f)
}

// serveFake serves srv on a loopback port and returns the flags that reach it.
func serveFake(t *testing.T, srv adminv1.AdminServiceServer) []string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	adminv1.RegisterAdminServiceServer(g, srv)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	return []string{"--addr", lis.Addr().String(), "--token-file", tokenFile}
}

func run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStatusTable(t *testing.T) {
	_, conn := startFake(t)
	code, out, errs := run(append(conn, "status")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"NODE", "CDS", "ECDS", "envoy-1", "SYNCED (aaaaaaaa)", "STALE", "NACKED",
		"envoy-1 rejected ECDS version dddd: Failed to load Wasm module",
		"WASM", "RELOADED", "FAILING",
		"envoy-1: a Wasm VM failed and was reloaded (2 reloads, 0 failed); last 2026-12-05T12:14:29Z",
		"envoy-2: a Wasm VM failed and is not running: its handshake filters refuse traffic (1 reloads, 3 failed); last 2026-12-05T12:15:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	// Each row names the node's filter build; a native node has no VM,
	// and a node from a replica that does not report the build shows "-".
	rows := []struct{ node, filter, wasm string }{
		{"envoy-1", "wasm", "RELOADED"},
		{"envoy-2", "-", "FAILING"},
		{"envoy-4", "native", "-"},
	}
	cells := statusCells(t, out)
	for _, r := range rows {
		if got := cells[r.node]; got["FILTER"] != r.filter || got["WASM"] != r.wasm {
			t.Errorf("%s: FILTER %q, WASM %q; want %q, %q", r.node, got["FILTER"], got["WASM"], r.filter, r.wasm)
		}
	}
}

// statusCells reads the status table: each node's cells by column name.
// No cell holds a space but the sync states' "SYNCED (version)", which
// come after the columns read here.
func statusCells(t *testing.T, out string) map[string]map[string]string {
	t.Helper()
	lines := strings.Split(out, "\n")
	header := strings.Fields(lines[0])
	if len(header) == 0 || header[0] != "NODE" {
		t.Fatalf("no table header:\n%s", out)
	}
	cells := map[string]map[string]string{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < len(header) || cells[f[0]] != nil {
			continue // a line under the table, or one about a node already read
		}
		row := map[string]string{}
		for i, name := range header {
			row[name] = f[i]
		}
		cells[f[0]] = row
	}
	return cells
}

func TestStatusJSON(t *testing.T) {
	_, conn := startFake(t)
	code, out, _ := run(append(conn, "-o", "json", "status")...)
	var v map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil {
		t.Fatalf("exit %d, not JSON:\n%s", code, out)
	}
}

func TestPolicyGetAndApply(t *testing.T) {
	f, conn := startFake(t)
	code, out, _ := run(append(conn, "policy", "get")...)
	if code != 0 || !strings.HasPrefix(out, "# revision: rev1\n") || !strings.Contains(out, "127.0.0.1:10000") {
		t.Fatalf("policy get: %d\n%s", code, out)
	}
	file := writeFile(t, "listeners: [{name: public, address: '127.0.0.1:10000'}]\n")
	code, out, _ = run(append(conn, "policy", "diff", "-f", file)...)
	if code != 0 || !strings.Contains(out, "~ RouteConfiguration public") || !f.applied.GetDryRun() {
		t.Fatalf("diff: %d\n%s", code, out)
	}
	code, out, _ = run(append(conn, "policy", "apply", "-f", file)...)
	if code != 0 || !strings.Contains(out, "applied: revision next") || f.applied.GetDryRun() {
		t.Fatalf("apply: %d\n%s", code, out)
	}
	code, _, errs := run(append(conn, "policy", "apply", "-f", file, "--revision", "old")...)
	if code != 1 || !strings.Contains(errs, "policy changed since") || !strings.Contains(errs, "dpctl policy get") {
		t.Fatalf("stale apply: %d %q", code, errs)
	}
}

// tokenFileMode writes the test token to a file with mode perm.
func tokenFileMode(t *testing.T, perm os.FileMode) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.token")
	if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoopbackTarget: the token goes in cleartext only to targets that
// stay on this host.
func TestLoopbackTarget(t *testing.T) {
	for target, want := range map[string]bool{
		"127.0.0.1:18001": true, "[::1]:18001": true, "localhost:18001": true, "127.8.9.10:1": true,
		"dns:///127.0.0.1:18001": true, "unix:///run/dp.sock": true,
		"10.0.0.1:18001": false, "[2001:db8::1]:18001": false, "cp.example.com:18001": false,
		"localhost.example.com:18001": false, "dns:///cp:18001": false, "0.0.0.0:18001": false, "127.0.0.1": false,
	} {
		if got := loopbackTarget(target); got != want {
			t.Errorf("loopbackTarget(%q) = %v, want %v", target, got, want)
		}
	}
}

func TestErrors(t *testing.T) {
	_, conn := startFake(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"wrong token", []string{"--addr", conn[1], "--token", "nope", "status"}, 1, "refused the token"},
		{"missing token file", []string{"--addr", conn[1], "--token-file", "/nonexistent/token", "status"}, 1, "read the admin token"},
		{"unreachable", []string{"--addr", "127.0.0.1:1", "--token", "x", "--timeout", "2s", "status"}, 1, "cannot reach the control plane"},
		{"unknown command", append(conn, "frobnicate"), 2, "unknown command"},
		{"no command", conn, 2, "a command is required"},
		{"apply without file", append(conn, "policy", "apply"), 2, "needs -f FILE"},
		{"bad output", append(conn, "-o", "xml", "status"), 2, "want table, json or yaml"},
		{"broken local file", append(conn, "policy", "validate", "-f", writeFile(t, "listeners:\n  - name: x\n    adress: 1\n")), 1, "listeners[0].adress: unknown field (line 3)"},
		{"aliases in a local file", append(conn, "policy", "validate", "-f", writeFile(t, "listeners:\n  - &l { name: x, address: 127.0.0.1:1 }\n  - *l\n")), 1, "line 3: YAML aliases (*l) are not allowed"},
		{"world-readable token file", []string{"--addr", conn[1], "--token-file", tokenFileMode(t, 0o644), "status"}, 1, "has mode 0644: group and others may use it"},
		{"group-readable token file", []string{"--addr", conn[1], "--token-file", tokenFileMode(t, 0o640), "status"}, 1, "has mode 0640"},
		{"cleartext to a remote address", []string{"--addr", "192.0.2.1:18001", "--token", token, "status"}, 1, "refusing to send the admin token in cleartext to 192.0.2.1:18001"},
		{"cleartext to a name", []string{"--addr", "cp.example.com:18001", "--token", token, "status"}, 1, "refusing to send the admin token in cleartext"},
		{"cleartext to a dns target", []string{"--addr", "dns:///cp.example.com:18001", "--token", token, "status"}, 1, "refusing to send the admin token in cleartext"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errs := run(tt.args...)
			if code != tt.code || !strings.Contains(errs, tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, errs, tt.code, tt.want)
			}
		})
	}
}
