package xds

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
)

// adsStream serves s on a loopback port and opens an ADS stream to it.
func adsStream(t *testing.T, s *Server) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	s.Register(g)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// exchange sends req on stream and returns the response it gets.
func exchange(t *testing.T, stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, req *discoveryv3.DiscoveryRequest) *discoveryv3.DiscoveryResponse {
	t.Helper()
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestReofferSurvivesFailover: an Envoy that refused a filter config and
// then took the marked re-offer of it reconnects to another replica,
// which has never seen it. That replica sends the same version with the
// same mark, byte for byte: Envoy compares the config with the one it
// runs by hash, and unmarked bytes would be applied again.
func TestReofferSurvivesFailover(t *testing.T) {
	ctx := context.Background()
	a := NewServer(ctx, quietLog(), NewMetrics(nil))
	b := NewServer(ctx, quietLog(), NewMetrics(nil))
	var names []string
	for _, r := range example(t)[resource.ExtensionConfigType] {
		names = append(names, cachev3.GetResourceName(r))
	}
	for _, s := range []*Server{a, b} {
		if _, err := s.SetResources(ctx, example(t)); err != nil {
			t.Fatal(err)
		}
	}
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	ask := func(version, nonce string, refuse bool) *discoveryv3.DiscoveryRequest {
		req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.ExtensionConfigType, ResourceNames: names, VersionInfo: version, ResponseNonce: nonce}
		if refuse {
			req.ErrorDetail = &status.Status{Message: "Unable to create Wasm plugin directpipe.handshake"}
		}
		return req
	}

	onA := adsStream(t, a)
	first := exchange(t, onA, ask("", "", false))
	reoffer := exchange(t, onA, ask("", first.GetNonce(), true))
	version := a.Versions()[resource.ExtensionConfigType]
	if !strings.HasPrefix(reoffer.GetVersionInfo(), version+retryMark) {
		t.Fatalf("the re-offer's version is %q, want %s marked", reoffer.GetVersionInfo(), version)
	}
	if proto.Equal(reoffer.GetResources()[0], first.GetResources()[0]) {
		t.Fatal("the re-offer carries the refused bytes")
	}
	if err := onA.Send(ask(reoffer.GetVersionInfo(), reoffer.GetNonce(), false)); err != nil {
		t.Fatal(err)
	}
	waitSynced := func(s *Server) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if nodes := s.Status().Nodes(); len(nodes) == 1 && nodes[0].State(resource.ExtensionConfigType, version) == Synced {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the node is not SYNCED on %s: %+v", version, s.Status().Nodes())
			}
		}
	}
	waitSynced(a)

	onB := adsStream(t, b)
	again := exchange(t, onB, ask(reoffer.GetVersionInfo(), "", false))
	if again.GetVersionInfo() != reoffer.GetVersionInfo() {
		t.Errorf("the other replica answers version %q, want %q", again.GetVersionInfo(), reoffer.GetVersionInfo())
	}
	if len(again.GetResources()) != len(reoffer.GetResources()) {
		t.Fatalf("the other replica sends %d resources, want %d", len(again.GetResources()), len(reoffer.GetResources()))
	}
	for i := range again.GetResources() {
		if !proto.Equal(again.GetResources()[i], reoffer.GetResources()[i]) {
			t.Errorf("resource %d: the other replica sends other bytes than the re-offer Envoy runs", i)
		}
	}
	if err := onB.Send(ask(again.GetVersionInfo(), again.GetNonce(), false)); err != nil {
		t.Fatal(err)
	}
	waitSynced(b)
}
