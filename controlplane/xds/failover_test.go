package xds

import (
	"bytes"
	"context"
	"maps"
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
)

// adsClient serves s on a loopback port and returns an ADS client of it,
// and a context that ends with the test.
func adsClient(t *testing.T, s *Server) (discoveryv3.AggregatedDiscoveryServiceClient, context.Context) {
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
	return discoveryv3.NewAggregatedDiscoveryServiceClient(conn), ctx
}

// adsStream opens a state-of-the-world ADS stream to s.
func adsStream(t *testing.T, s *Server) discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient {
	t.Helper()
	c, ctx := adsClient(t, s)
	stream, err := c.StreamAggregatedResources(ctx)
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

// twoReplicas are two servers of the same resources, as two replicas of
// one policy, and the names of their extension configs.
func twoReplicas(t *testing.T) (a, b *Server, names []string) {
	t.Helper()
	ctx := context.Background()
	a = NewServer(ctx, quietLog(), NewMetrics(nil))
	b = NewServer(ctx, quietLog(), NewMetrics(nil))
	for _, r := range example(t)[resource.ExtensionConfigType] {
		names = append(names, cachev3.GetResourceName(r))
	}
	for _, s := range []*Server{a, b} {
		if _, err := s.SetResources(ctx, example(t)); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, names
}

// resourceSet is the bytes of each resource of resp.
func resourceSet(resp *discoveryv3.DiscoveryResponse) map[string]bool {
	out := map[string]bool{}
	for _, a := range resp.GetResources() {
		out[string(a.GetValue())] = true
	}
	return out
}

// checkMarked checks that resp (what who got) is version marked as a
// re-offer, none of its resources the bytes of unmarked.
func checkMarked(t *testing.T, who string, resp *discoveryv3.DiscoveryResponse, version string, unmarked *discoveryv3.DiscoveryResponse) {
	t.Helper()
	if !strings.HasPrefix(resp.GetVersionInfo(), version+retryMark) {
		t.Fatalf("%s: version %q, want %s marked", who, resp.GetVersionInfo(), version)
	}
	plain := resourceSet(unmarked)
	for b := range resourceSet(resp) {
		if plain[b] {
			t.Fatalf("%s: unmarked bytes", who)
		}
	}
}

// TestReofferSurvivesFailover: an Envoy that refused a filter config and
// then took the marked re-offer of it reconnects to another replica,
// which has never seen it. That replica sends the same version with the
// same mark, byte for byte: Envoy compares the config with the one it
// runs by hash, and unmarked bytes would be applied again.
func TestReofferSurvivesFailover(t *testing.T) {
	a, b, names := twoReplicas(t)
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
	checkMarked(t, "the re-offer", reoffer, version, first)
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
	// A response lists the resources in any order.
	if got, want := resourceSet(again), resourceSet(reoffer); !maps.Equal(got, want) {
		t.Errorf("the other replica sends other bytes than the re-offer Envoy runs")
	}
	if err := onB.Send(ask(again.GetVersionInfo(), again.GetNonce(), false)); err != nil {
		t.Fatal(err)
	}
	waitSynced(b)
}

// deltaStream opens a delta ADS stream to s.
func deltaStream(t *testing.T, s *Server) discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient {
	t.Helper()
	c, ctx := adsClient(t, s)
	stream, err := c.DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return stream
}

// TestDeltaReconnectHoldsLatest: a delta Envoy that reconnects, to
// another replica, names the resources it holds; a replica serving the
// same versions sends it nothing, and must still show it SYNCED, as it
// is. One that holds another version is not.
func TestDeltaReconnectHoldsLatest(t *testing.T) {
	a, b, names := twoReplicas(t)
	version := a.Versions()[resource.ExtensionConfigType]
	state := func(s *Server, node string) SyncState {
		for _, n := range s.Status().Nodes() {
			if n.ID == node {
				return n.State(resource.ExtensionConfigType, version)
			}
		}
		return NotSent
	}
	waitState := func(s *Server, node string, want SyncState) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); state(s, node) != want; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("node %s is %s, want %s", node, state(s, node), want)
			}
		}
	}

	onA := deltaStream(t, a)
	node := &corev3.Node{Id: "edge-1", Cluster: "edge"}
	if err := onA.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ExtensionConfigType, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	resp, err := onA.Recv()
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]string{}
	for _, r := range resp.GetResources() {
		held[r.GetName()] = r.GetVersion()
	}
	if err := onA.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.ExtensionConfigType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	waitState(a, "edge-1", Synced)

	onB := deltaStream(t, b)
	if err := onB.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: node, TypeUrl: resource.ExtensionConfigType, ResourceNamesSubscribe: names, InitialResourceVersions: held,
	}); err != nil {
		t.Fatal(err)
	}
	waitState(b, "edge-1", Synced)

	// Another node holds one resource at another version: it is sent that
	// one, and stays unsynced until it ACKs it.
	stale := maps.Clone(held)
	stale[names[0]] = "older"
	other := &corev3.Node{Id: "edge-2", Cluster: "edge"}
	onB2 := deltaStream(t, b)
	if err := onB2.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: other, TypeUrl: resource.ExtensionConfigType, ResourceNamesSubscribe: names, InitialResourceVersions: stale,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := onB2.Recv(); err != nil {
		t.Fatal(err)
	}
	if got := state(b, "edge-2"); got == Synced {
		t.Errorf("a node holding an older resource is %s", got)
	}
}

// TestOlderVersionIsOfferedMarked: an Envoy that reconnects running an
// older version of the filter configs than the current one may have
// refused the current one on a replica that is gone, and would skip its
// bytes unapplied; it is sent the current version marked, as a re-offer.
// A fresh Envoy, and one that runs the current version, get it unmarked.
func TestOlderVersionIsOfferedMarked(t *testing.T) {
	_, b, names := twoReplicas(t)
	version := b.Versions()[resource.ExtensionConfigType]
	ask := func(node, v string) *discoveryv3.DiscoveryResponse {
		return exchange(t, adsStream(t, b), &discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: node}, TypeUrl: resource.ExtensionConfigType, ResourceNames: names, VersionInfo: v,
		})
	}
	fresh := ask("fresh", "")
	if fresh.GetVersionInfo() != version {
		t.Fatalf("a fresh Envoy gets version %q, want %q", fresh.GetVersionInfo(), version)
	}
	current := ask("current", version)
	if current.GetVersionInfo() != version || !maps.Equal(resourceSet(current), resourceSet(fresh)) {
		t.Errorf("an Envoy that runs the current version gets %q, other bytes than a fresh one", current.GetVersionInfo())
	}
	older := ask("older", "0123456789abcdef")
	checkMarked(t, "an Envoy that runs an older version", older, version, fresh)
}

// TestDeltaOlderVersionIsOfferedMarked is TestOlderVersionIsOfferedMarked
// for delta xDS: a reconnecting Envoy that holds a filter config at an
// older version is sent the current one marked.
func TestDeltaOlderVersionIsOfferedMarked(t *testing.T) {
	_, b, names := twoReplicas(t)
	ask := func(node string, held map[string]string) *discoveryv3.DeltaDiscoveryResponse {
		stream := deltaStream(t, b)
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
			Node: &corev3.Node{Id: node}, TypeUrl: resource.ExtensionConfigType, ResourceNamesSubscribe: names, InitialResourceVersions: held,
		}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	plain := map[string][]byte{}
	for _, r := range ask("fresh", nil).GetResources() {
		plain[r.GetName()] = r.GetResource().GetValue()
	}
	older := map[string]string{}
	for _, n := range names {
		older[n] = "older"
	}
	resp := ask("older", older)
	if len(resp.GetResources()) != len(names) {
		t.Fatalf("an Envoy that holds older filter configs is sent %d, want %d", len(resp.GetResources()), len(names))
	}
	for _, r := range resp.GetResources() {
		if bytes.Equal(r.GetResource().GetValue(), plain[r.GetName()]) {
			t.Errorf("%s: an Envoy that holds an older version is sent the unmarked bytes", r.GetName())
		}
	}
}
