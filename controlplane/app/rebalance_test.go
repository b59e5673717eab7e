package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"

	"github.com/directpipe/directpipe/controlplane/admin"
)

// shedRecorder is a back end's drain_path: it records each request's
// query and answers it will end what it was asked.
type shedRecorder struct {
	mu    sync.Mutex
	asked []string
}

func (s *shedRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.asked = append(s.asked, r.Method+" "+r.URL.Path+"?"+r.URL.RawQuery)
	s.mu.Unlock()
	fmt.Fprintf(w, `{"streams": %s, "window": %q}`, r.URL.Query().Get("streams"), r.URL.Query().Get("window"))
}

func (s *shedRecorder) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.asked...)
}

// liveReport is an Envoy's load report of the back end "pool".
func liveReport(t *testing.T, live map[string]uint64) []*endpointv3.ClusterStats {
	cs := &endpointv3.ClusterStats{ClusterName: "pool", UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{{}}}
	for ep, n := range live {
		host, port, _ := net.SplitHostPort(ep)
		p, err := strconv.Atoi(port)
		if err != nil {
			t.Fatal(err)
		}
		cs.UpstreamLocalityStats[0].UpstreamEndpointStats = append(cs.UpstreamLocalityStats[0].UpstreamEndpointStats, &endpointv3.UpstreamEndpointStats{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)},
			}}},
			TotalRequestsInProgress: n,
		})
	}
	return []*endpointv3.ClusterStats{cs}
}

// TestRebalance: the plan sheds what each endpoint holds above the
// rounded-up mean; a dry run asks nobody; a run asks each hot endpoint's
// back end at its drain_path for its share, over the window; back ends
// that cannot be rebalanced are refused with the reason.
func TestRebalance(t *testing.T) {
	hot, cold := &shedRecorder{}, &shedRecorder{}
	hotSrv, coldSrv := httptest.NewServer(hot), httptest.NewServer(cold)
	defer hotSrv.Close()
	defer coldSrv.Close()
	hotEP, coldEP := hotSrv.Listener.Addr().String(), coldSrv.Listener.Addr().String()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	policy := fmt.Sprintf(`listeners: [{ name: public, address: "127.0.0.1:10000" }]
routes:
  - { name: pool, match: { path: /v1/pool }, kind: websocket, backend: pool }
  - { name: rr, match: { path: /v1/rr }, kind: websocket, backend: rr }
  - { name: quiet, match: { path: /v1/quiet }, kind: websocket, backend: quiet }
backends:
  - { name: pool, endpoints: [%[1]q, %[2]q], lb: least_streams, drain_path: /debug/drain }
  - { name: rr, endpoints: [%[1]q] }
  - { name: quiet, endpoints: [%[1]q], lb: least_streams }
`, hotEP, coldEP)
	if err := os.WriteFile(path, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, Config{PolicyFile: path, XDSAddr: "127.0.0.1:0", WasmPath: "/x.wasm", Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	a.streams.Record("envoy-1", liveReport(t, map[string]uint64{hotEP: 7}))
	a.streams.Record("envoy-2", liveReport(t, map[string]uint64{hotEP: 3, coldEP: 1}))

	plan, err := a.Rebalance(ctx, "pool", 0, true)
	if err != nil {
		t.Fatal(err)
	}
	// 11 streams over 2 endpoints: the mean rounded up is 6, the hot one
	// holds 10 and sheds 4.
	if st := plan.GetSteps(); len(st) != 2 || st[0].GetLive() != 10 || st[0].GetShed() != 4 || st[1].GetShed() != 0 || plan.GetRan() {
		t.Fatalf("dry run = %v", plan)
	}
	if len(hot.requests())+len(cold.requests()) != 0 {
		t.Fatalf("a dry run asked %v %v", hot.requests(), cold.requests())
	}
	run, err := a.Rebalance(ctx, "pool", 3*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if !run.GetRan() || run.GetSteps()[0].GetAsked() != 4 || run.GetSteps()[0].GetError() != "" {
		t.Errorf("run = %v", run)
	}
	if got := hot.requests(); len(got) != 1 || got[0] != "POST /debug/drain?streams=4&window=3s" {
		t.Errorf("the hot back end was asked %v", got)
	}
	if got := cold.requests(); len(got) != 0 {
		t.Errorf("the cold back end was asked %v", got)
	}

	for _, tc := range []struct {
		backend string
		window  time.Duration
		want    error
	}{
		{"nope", 0, admin.ErrNotFound},
		{"rr", 0, admin.ErrInvalidArgument},
		{"quiet", 0, admin.ErrInvalidArgument},
		{"pool", 11 * time.Minute, admin.ErrInvalidArgument},
	} {
		if _, err := a.Rebalance(ctx, tc.backend, tc.window, false); !errors.Is(err, tc.want) {
			t.Errorf("rebalance %s over %s: %v, want %v", tc.backend, tc.window, err, tc.want)
		}
	}
}

// TestRebalanceRefusals: the admin API refuses, with the status a caller
// can act on, a request it cannot carry out.
func TestRebalanceRefusals(t *testing.T) {
	_, client, _ := startApp(t, copyExample(t))
	ctx := authed(context.Background())
	for _, tt := range []struct {
		name string
		req  *adminv1.RebalanceRequest
		want codes.Code
	}{
		{"no back end", &adminv1.RebalanceRequest{}, codes.InvalidArgument},
		{"unknown back end", &adminv1.RebalanceRequest{Backend: "nope"}, codes.NotFound},
		{"round robin", &adminv1.RebalanceRequest{Backend: "voice", DryRun: true}, codes.InvalidArgument},
		{"negative window", &adminv1.RebalanceRequest{Backend: "voice", Window: durationpb.New(-time.Second)}, codes.InvalidArgument},
	} {
		if _, err := client.Rebalance(ctx, tt.req); status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.want)
		}
	}
}
