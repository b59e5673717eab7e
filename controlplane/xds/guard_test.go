package xds

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// rawCodec sends bytes as they are: a request no Go message could build
// without the memory the server is to be spared.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(proto.Message))
}

// TestXDSRequestBoundedBeforeDecoding: a discovery request whose node
// metadata is half a megabyte of empty fields (two bytes on the wire, a
// few hundred decoded, each) ends the stream before it is decoded, while
// an ordinary request is served.
func TestXDSRequestBoundedBeforeDecoding(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	srv := NewServer(ctx, quietLog(), NewMetrics(nil))
	if _, err := srv.SetResources(ctx, example(t)); err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(NewGuard(DefaultLimits, nil, nil, quietLog()).ServerOptions()...)
	srv.Register(g)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	// DiscoveryRequest.node (2) → Node.metadata (3) → Struct.fields (1),
	// each entry an empty map entry.
	var fields []byte
	for range 200_000 {
		fields = protowire.AppendTag(fields, 1, protowire.BytesType)
		fields = protowire.AppendVarint(fields, 0)
	}
	node := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), []byte("n1")) // Node.id
	node = protowire.AppendBytes(protowire.AppendTag(node, 3, protowire.BytesType), fields)
	flood := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), node)
	ordinary, err := proto.Marshal(&discoveryv3.DiscoveryRequest{
		Node:    &corev3.Node{Id: "n2"},
		TypeUrl: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
	})
	if err != nil {
		t.Fatal(err)
	}

	desc := &grpc.StreamDesc{StreamName: "StreamAggregatedResources", ServerStreams: true, ClientStreams: true}
	const method = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
	for _, tt := range []struct {
		name    string
		request []byte
		refused bool
	}{
		{"ordinary", ordinary, false},
		{"flood of empty metadata fields", flood, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := conn.NewStream(ctx, desc, method, grpc.ForceCodecV2(rawCodec{}))
			if err != nil {
				t.Fatal(err)
			}
			if err := s.SendMsg(tt.request); err != nil {
				t.Fatal(err)
			}
			var resp discoveryv3.DiscoveryResponse
			err = s.RecvMsg(&resp)
			switch {
			case tt.refused && (err == nil || !strings.Contains(err.Error(), "refused before decoding: node: metadata: fields: ")):
				t.Fatalf("%v, want the stream refused naming node.metadata.fields", err)
			case !tt.refused && (err != nil || len(resp.GetResources()) == 0):
				t.Fatalf("ordinary request: %v, %d resources", err, len(resp.GetResources()))
			}
		})
	}
}
