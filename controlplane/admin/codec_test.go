package admin

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// decodingStream hands RecvMsg the bytes it holds, through the codec.
type decodingStream struct {
	grpc.ServerStream
	wire []byte
}

func (s decodingStream) RecvMsg(m any) error {
	return newBoundedCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(s.wire)}, m)
}

// TestRefusalReachesNoHandler: a request the codec refused is answered
// InvalidArgument whether it comes unary or streamed, and one it accepts
// decodes as gRPC's own codec would.
func TestRefusalReachesNoHandler(t *testing.T) {
	refused := protowire.AppendTag(nil, 1, protowire.BytesType)
	refused = protowire.AppendBytes(refused, bytes.Repeat([]byte{0x12, 0x00}, 10_001))
	accepted, err := proto.Marshal(&adminv1.ValidatePolicyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		wire []byte
		want codes.Code
	}{
		{"refused", refused, codes.InvalidArgument},
		{"accepted", accepted, codes.OK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			reached := false
			var req adminv1.ValidatePolicyRequest
			if err := newBoundedCodec().Unmarshal(mem.BufferSlice{mem.SliceBuffer(tt.wire)}, &req); err != nil {
				t.Fatal(err)
			}
			_, err := refuseUndecodedUnary(t.Context(), &req, nil, func(_ context.Context, _ any) (any, error) {
				reached = true
				return nil, nil
			})
			if status.Code(err) != tt.want || reached == (tt.want != codes.OK) {
				t.Fatalf("unary: %v, handler reached %v", err, reached)
			}
			err = refuseUndecodedStream(nil, decodingStream{wire: tt.wire}, nil, func(_ any, ss grpc.ServerStream) error {
				return ss.RecvMsg(&adminv1.ValidatePolicyRequest{})
			})
			if status.Code(err) != tt.want {
				t.Fatalf("stream: %v", err)
			}
			if tt.want != codes.OK && !strings.Contains(err.Error(), "policy: routes: more than the 10000 entries") {
				t.Fatalf("the refusal does not name the field: %v", err)
			}
		})
	}
}
