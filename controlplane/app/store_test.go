//go:build !wasip1

package app_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
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
	"github.com/directpipe/directpipe/controlplane/app"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/store"
	"github.com/directpipe/directpipe/envoy/testkit"
)

const testToken = "test-admin-token"

func authed(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+testToken)
}

func copyExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "examples", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startReplica runs an App on a shared etcd store.
func startReplica(t *testing.T, endpoints, seed string) (*app.App, adminv1.AdminServiceClient, healthpb.HealthClient) {
	t.Helper()
	eps, err := store.ParseURL("etcd://" + endpoints)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.NewEtcd(store.EtcdConfig{Endpoints: eps, Replica: "r", LeaseTTL: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, app.Config{
		Store: st, PolicyFile: seed, Replica: "r", XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		AdminToken: testToken, WasmPath: "/x.wasm", Log: log,
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
		<-done
		st.Close()
	})
	return a, adminv1.NewAdminServiceClient(conn), healthpb.NewHealthClient(conn)
}

func readyz(t *testing.T, a *app.App) int {
	t.Helper()
	resp, err := http.Get("http://" + a.MetricsAddr() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func serving(t *testing.T, h healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := h.Check(authed(t.Context()), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetStatus()
}

// TestReplicaReadinessAndStoreOutage: a replica whose store is down starts
// not ready (health and /readyz); once the store answers it serves the
// seed; when the store goes away again it keeps serving the last good
// policy, stays ready, and refuses applies with UNAVAILABLE.
func TestReplicaReadinessAndStoreOutage(t *testing.T) {
	seed := copyExample(t)
	dead := "127.0.0.1:" + strconv.Itoa(testkit.FreePort(t))
	a, _, h := startReplica(t, dead, seed)
	if a.Ready() || readyz(t, a) != http.StatusServiceUnavailable || serving(t, h) != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatal("a replica without its store is ready")
	}
	if p, _ := a.Policy(); p != nil {
		t.Fatal("a replica without its store serves a policy")
	}

	cluster := testkit.StartEtcd(t, 1)
	a, client, h := startReplica(t, cluster.Endpoints(), seed)
	if !a.Ready() || readyz(t, a) != http.StatusOK || serving(t, h) != healthpb.HealthCheckResponse_SERVING {
		t.Fatal("a replica that loaded its policy is not ready")
	}
	cur, rev := a.Policy()
	cluster.Members[0].Kill()

	next := proto.Clone(cur).(*policyv1.Policy)
	next.Backends[0].Endpoints = append(next.Backends[0].Endpoints, "127.0.0.1:9")
	_, err := client.ApplyPolicy(authed(t.Context()), &adminv1.ApplyPolicyRequest{Policy: next, ExpectedRevision: rev})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "cannot be changed until the store is back") {
		t.Fatalf("apply with the store down: %v, want UNAVAILABLE saying why", err)
	}
	if _, got := a.Policy(); got != rev || !a.Ready() || readyz(t, a) != http.StatusOK {
		t.Fatalf("after the store went away: serving %s (want %s), ready %v", got, rev, a.Ready())
	}
	if policy.Revision(cur) != rev {
		t.Fatal("revision is not the content revision")
	}
}
