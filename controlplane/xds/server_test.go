package xds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func example(t *testing.T) xdstype.Resources {
	t.Helper()
	p, err := policy.LoadFile("../translate/testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	res, err := translate.Translate(p, translate.Options{Module: translate.ModuleSource{File: "/x.wasm"}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestSetResourcesVersionsAreContentHashes(t *testing.T) {
	ctx := context.Background()
	s := NewServer(ctx, quietLog(), NewMetrics(nil))
	v1, err := s.SetResources(ctx, example(t))
	if err != nil {
		t.Fatal(err)
	}
	other := NewServer(ctx, quietLog(), NewMetrics(nil))
	v2, err := other.SetResources(ctx, example(t))
	if err != nil {
		t.Fatal(err)
	}
	for typ, v := range v1 {
		if v2[typ] != v {
			t.Errorf("%s: version %s in one process, %s in another", typ, v, v2[typ])
		}
	}
	res := example(t)
	// Drop the voice back end: its cluster and its endpoints.
	voice := func(r types.Resource) bool {
		n, ok := r.(interface{ GetName() string })
		c, isCLA := r.(interface{ GetClusterName() string })
		return (ok && n.GetName() == "voice") || (isCLA && c.GetClusterName() == "voice")
	}
	res[resource.EndpointType] = slices.DeleteFunc(res[resource.EndpointType], voice)
	res[resource.ClusterType] = slices.DeleteFunc(res[resource.ClusterType], voice)
	v3, err := s.SetResources(ctx, res)
	if err != nil {
		t.Fatal(err)
	}
	if v3[resource.ListenerType] != v1[resource.ListenerType] {
		t.Error("listener version moved though listeners did not change")
	}
	if v3[resource.ClusterType] == v1[resource.ClusterType] {
		t.Error("cluster version did not move though clusters changed")
	}
}

func TestSetResourcesKeepsLastGoodSnapshot(t *testing.T) {
	ctx := context.Background()
	s := NewServer(ctx, quietLog(), NewMetrics(nil))
	good, err := s.SetResources(ctx, example(t))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		break_ func(xdstype.Resources)
	}{
		{"route table missing", func(r xdstype.Resources) { delete(r, resource.RouteType) }},
		{"endpoints missing", func(r xdstype.Resources) { r[resource.EndpointType] = r[resource.EndpointType][:1] }},
		{"invalid resource", func(r xdstype.Resources) {
			r[resource.RouteType] = []types.Resource{&routev3.RouteConfiguration{Name: "public", VirtualHosts: []*routev3.VirtualHost{{}}}}
		}},
		{"a type not served", func(r xdstype.Resources) { r[resource.SecretType] = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := example(t)
			tt.break_(res)
			if _, err := s.SetResources(ctx, res); err == nil {
				t.Fatal("a broken snapshot was accepted")
			}
			if got := s.Versions(); got[resource.RouteType] != good[resource.RouteType] || got[resource.EndpointType] != good[resource.EndpointType] {
				t.Errorf("versions changed after a rejected snapshot: %v, want %v", got, good)
			}
		})
	}
}

func TestStatusTracksAckAndNack(t *testing.T) {
	st := newStatus(quietLog(), NewMetrics(nil))
	cb := st.callbacks()
	ctx := context.Background()
	node := &corev3.Node{Id: "envoy-1", Cluster: "edge", UserAgentName: "envoy"}
	const typ = resource.ExtensionConfigType

	_ = cb.OnStreamOpen(ctx, 1, resource.AnyType)
	_ = cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ})
	cb.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: "v1", Nonce: "n1"})

	n := st.Nodes()[0]
	if got := n.State(typ, "v1"); got != Stale {
		t.Errorf("after a send: %s, want %s", got, Stale)
	}
	_ = cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: "v1", ResponseNonce: "n1"})
	if got := st.Nodes()[0].State(typ, "v1"); got != Synced {
		t.Errorf("after an ACK: %s, want %s", got, Synced)
	}
	cb.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: "v2", Nonce: "n2"})
	_ = cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{
		Node: node, TypeUrl: typ, VersionInfo: "v1", ResponseNonce: "n2",
		ErrorDetail: &status.Status{Message: "Invalid path: /x.wasm"},
	})
	n = st.Nodes()[0]
	if got := n.State(typ, "v2"); got != Nacked {
		t.Errorf("after a NACK: %s, want %s", got, Nacked)
	}
	if nack := n.Types[typ].LastNack; nack == nil || nack.Version != "v2" || nack.Error != "Invalid path: /x.wasm" {
		t.Errorf("LastNack = %+v", nack)
	}
	if n.Types[typ].Acked != "v1" {
		t.Errorf("Acked = %q, want the last good v1", n.Types[typ].Acked)
	}
	// Envoy may name the rejected version in a later request: it stays
	// NACKED until a new version is sent.
	_ = cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: "v2", ResponseNonce: "n2"})
	if got := st.Nodes()[0].State(typ, "v2"); got != Nacked {
		t.Errorf("after a re-request of the rejected version: %s, want %s", got, Nacked)
	}
	cb.OnStreamResponse(ctx, 1, nil, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: "v3", Nonce: "n3"})
	_ = cb.OnStreamRequest(1, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: "v3", ResponseNonce: "n3"})
	if got := st.Nodes()[0].State(typ, "v3"); got != Synced {
		t.Errorf("after a new version was ACKed: %s, want %s", got, Synced)
	}
	cb.OnStreamClosed(1, node)
	if st.Nodes()[0].Connected {
		t.Error("node still connected after its stream closed")
	}
}

func TestStatusDeltaAckByNonce(t *testing.T) {
	st := newStatus(quietLog(), NewMetrics(nil))
	cb := st.callbacks()
	ctx := context.Background()
	node := &corev3.Node{Id: "envoy-d"}
	const typ = resource.RouteType
	_ = cb.OnDeltaStreamOpen(ctx, 7, resource.AnyType)
	_ = cb.OnStreamDeltaRequest(7, &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: typ})
	cb.OnStreamDeltaResponse(7, nil, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typ, SystemVersionInfo: "r1", Nonce: "a"})
	_ = cb.OnStreamDeltaRequest(7, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: typ, ResponseNonce: "a"})
	n := st.Nodes()[0]
	if n.Flavour != FlavourDelta {
		t.Errorf("flavour = %s", n.Flavour)
	}
	if got := n.State(typ, "r1"); got != Synced {
		t.Errorf("state = %s, want %s", got, Synced)
	}
}

func TestStatusForgetsLongGoneNodes(t *testing.T) {
	st := newStatus(quietLog(), NewMetrics(nil))
	cb := st.callbacks()
	ctx := context.Background()
	for i := range maxGoneNodes + 10 {
		id := int64(i + 1)
		_ = cb.OnStreamOpen(ctx, id, resource.AnyType)
		_ = cb.OnStreamRequest(id, &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: fmt.Sprintf("n%d", i)}, TypeUrl: resource.ListenerType})
		cb.OnStreamClosed(id, nil)
	}
	nodes := st.Nodes()
	if len(nodes) != maxGoneNodes {
		t.Fatalf("%d nodes remembered, want %d", len(nodes), maxGoneNodes)
	}
	for _, n := range nodes {
		if n.ID == "n0" {
			t.Error("the longest-gone node is still remembered")
		}
	}
}

// TestVersionMapIsGoControlPlanes: the per-resource versions delta xDS
// compares, which SetResources hashes itself, are the ones go-control-plane
// would compute.
func TestVersionMapIsGoControlPlanes(t *testing.T) {
	ctx := context.Background()
	s := NewServer(ctx, quietLog(), NewMetrics(nil))
	if _, err := s.SetResources(ctx, example(t)); err != nil {
		t.Fatal(err)
	}
	got, err := s.cache.GetSnapshot(snapshotGroup)
	if err != nil {
		t.Fatal(err)
	}
	snap := got.(*cachev3.Snapshot)
	fresh := &cachev3.Snapshot{Resources: snap.Resources}
	if err := fresh.ConstructVersionMap(); err != nil {
		t.Fatal(err)
	}
	// go-control-plane also lists empty maps for the types nobody serves;
	// go-control-plane only reads the map, and a missing type reads empty.
	for _, k := range xdstype.Kinds() {
		if got, want := snap.VersionMap[k.URL], fresh.VersionMap[k.URL]; len(want) == 0 || !maps.Equal(got, want) {
			t.Errorf("%s: version map %v, want %v", k.Abbrev, got, want)
		}
	}
}

// TestSetResourcesReusesOnlyTheSameResources: a set that keeps some
// types' resources (as a bridge does) keeps their versions, and a type
// whose list changes, even by one resource, is hashed again.
func TestSetResourcesReusesOnlyTheSameResources(t *testing.T) {
	ctx := context.Background()
	s := NewServer(ctx, quietLog(), NewMetrics(nil))
	first := example(t)
	v1, err := s.SetResources(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	staged := first.Clone()
	rc := proto.Clone(staged[resource.RouteType][0]).(*routev3.RouteConfiguration)
	rc.VirtualHosts[0].Domains = append(rc.VirtualHosts[0].Domains, "staged.example.com")
	staged[resource.RouteType] = []types.Resource{rc}
	v2, err := s.SetResources(ctx, staged)
	if err != nil {
		t.Fatal(err)
	}
	for typ, v := range v1 {
		if changed := v2[typ] != v; changed != (typ == resource.RouteType) {
			t.Errorf("%s: version %s then %s", typ, v, v2[typ])
		}
	}
	// The same content in new messages is the same version.
	v3, err := s.SetResources(ctx, example(t))
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(v1, v3) {
		t.Errorf("versions %v, then %v for the same content", v1, v3)
	}
}

// TestAwaitAnswers: Await returns once every connected node answered the
// wanted versions, with each NACK; it waits for a node that has not, ends
// with the context, and names a node that left.
func TestAwaitAnswers(t *testing.T) {
	st := newStatus(quietLog(), NewMetrics(nil))
	cb := st.callbacks()
	ctx := context.Background()
	const lds, rds = resource.ListenerType, resource.RouteType
	want := map[string]string{lds: "l2", rds: "r2", resource.ExtensionConfigType: "e1"}
	connect := func(stream int64, id string) *corev3.Node {
		node := &corev3.Node{Id: id}
		_ = cb.OnStreamOpen(ctx, stream, resource.AnyType)
		for _, typ := range []string{lds, rds} {
			_ = cb.OnStreamRequest(stream, &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ})
		}
		return node
	}
	send := func(stream int64, typ, version string) {
		cb.OnStreamResponse(ctx, stream, nil, &discoveryv3.DiscoveryResponse{TypeUrl: typ, VersionInfo: version, Nonce: fmt.Sprint(stream, typ, version)})
	}
	answer := func(stream int64, node *corev3.Node, typ, version, nack string) {
		req := &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ, VersionInfo: version, ResponseNonce: fmt.Sprint(stream, typ, version)}
		if nack != "" {
			req.VersionInfo = "old"
			req.ErrorDetail = &status.Status{Message: nack}
		}
		_ = cb.OnStreamRequest(stream, req)
	}
	good, bad, slow := connect(1, "good"), connect(2, "bad"), connect(3, "slow")
	for stream := int64(1); stream <= 3; stream++ {
		send(stream, lds, "l2")
		send(stream, rds, "r2")
	}
	answer(1, good, lds, "l2", "")
	answer(1, good, rds, "r2", "")
	answer(2, bad, lds, "l2", "cannot bind 127.0.0.1:80: Address already in use")
	answer(2, bad, rds, "r2", "")
	answer(3, slow, lds, "l2", "")

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	got := st.Await(short, want)
	cancel()
	if len(got) != 3 || got[0].Node != "bad" || got[1].Node != "good" || got[2].Node != "slow" {
		t.Fatalf("answers %+v", got)
	}
	if n, ok := got[0].Nacks[lds]; len(got[0].Nacks) != 1 || !ok || n.Version != "l2" || !strings.Contains(n.Error, "Address already in use") {
		t.Errorf("bad: nacks %+v", got[0].Nacks)
	}
	if len(got[1].Nacks)+len(got[1].Pending) != 0 {
		t.Errorf("good: %+v", got[1])
	}
	if len(got[2].Pending) != 1 || got[2].Pending[0] != rds {
		t.Errorf("slow: pending %v, want %s", got[2].Pending, rds)
	}

	// The slow node answers while Await waits; the bad one leaves.
	done := make(chan []Answer)
	go func() { done <- st.Await(ctx, want) }()
	answer(3, slow, rds, "r2", "")
	cb.OnStreamClosed(2, bad)
	select {
	case got = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Await did not return after every node answered")
	}
	for _, a := range got {
		if len(a.Pending) != 0 {
			t.Errorf("%s still pending: %v", a.Node, a.Pending)
		}
	}
}

// TestSetVariantsServesEachBuildItsOwn: a node whose metadata asks for the
// native build maps to a snapshot of its own, under the same version per
// type as every other node, hashed over both sets; without a native set it
// is served the Wasm one.
func TestSetVariantsServesEachBuildItsOwn(t *testing.T) {
	ctx := context.Background()
	p, err := policy.LoadFile("../translate/testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	native, err := translate.Translate(p, translate.Options{
		Filter:       translate.FilterNative,
		Module:       translate.ModuleSource{File: "/x.wasm"}, // the tcp mode route's
		NativeModule: translate.ModuleSource{File: "/libdirectpipe_native.so"},
	})
	if err != nil {
		t.Fatal(err)
	}
	nativeNode := &corev3.Node{Id: "n", Metadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		FilterMetadataKey: structpb.NewStringValue("native"),
	}}}
	if got := (groupHash{}).ID(nativeNode); got != nativeGroup {
		t.Fatalf("a node asking for native maps to %q", got)
	}
	if got := (groupHash{}).ID(&corev3.Node{Id: "w"}); got != snapshotGroup {
		t.Fatalf("a node asking for nothing maps to %q", got)
	}
	srv := NewServer(ctx, quietLog(), NewMetrics(nil))
	ecdsType := func(group string) string {
		t.Helper()
		snap, err := srv.cache.GetSnapshot(group)
		if err != nil {
			t.Fatal(err)
		}
		r, ok := snap.GetResources(resource.ExtensionConfigType)[translate.HandshakeFilterName]
		if !ok {
			t.Fatalf("%s: no %s", group, translate.HandshakeFilterName)
		}
		return r.(*corev3.TypedExtensionConfig).GetTypedConfig().GetTypeUrl()
	}
	wasmOnly, err := srv.SetVariants(ctx, example(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := ecdsType(snapshotGroup), ecdsType(nativeGroup); a != b || !strings.HasSuffix(a, "wasm.v3.Wasm") {
		t.Errorf("without a native set: %s and %s, want the Wasm filter for both", a, b)
	}
	both, err := srv.SetVariants(ctx, example(t), native)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := ecdsType(snapshotGroup), ecdsType(nativeGroup); !strings.HasSuffix(a, "wasm.v3.Wasm") || !strings.HasSuffix(b, "DynamicModuleFilter") {
		t.Errorf("with a native set: %s and %s", a, b)
	}
	if both[resource.ExtensionConfigType] == wasmOnly[resource.ExtensionConfigType] {
		t.Error("the filter config version did not move when the native set came")
	}
	for _, group := range []string{snapshotGroup, nativeGroup} {
		snap, err := srv.cache.GetSnapshot(group)
		if err != nil {
			t.Fatal(err)
		}
		for typ, v := range both {
			if got := snap.GetVersion(typ); got != v {
				t.Errorf("%s: %s at version %s, want %s", group, typ, got, v)
			}
		}
	}
}
