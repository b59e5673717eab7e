package admin

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/directpipe/directpipe/controlplane/wirebound"
)

// boundedCodec is gRPC's proto codec with limits checked before a request
// is decoded.
//
// gRPC answers any codec error Internal, which would blame the server for
// the client's request. So a refused request decodes to an empty message
// carrying the refusal in an unknown field (refusalField), and the
// interceptors (refuseUndecoded) answer it InvalidArgument before any
// handler sees it.
type boundedCodec struct {
	encoding.CodecV2
	limits wirebound.Limits
}

// refusalField is the field number that carries a refusal: the largest
// valid one, which no message of the admin API will ever use.
const refusalField protowire.Number = protowire.MaxValidNumber

// newBoundedCodec bounds what an admin request holds, checked on the wire
// before it is decoded (gRPC bounds its bytes, MaxRequestBytes). No list
// of a policy may hold more than 10,000 entries (routes, back ends and an
// auth policy's API keys are the longest), and the largest valid policy
// decodes to a few tens of MiB.
func newBoundedCodec() boundedCodec {
	return boundedCodec{encoding.GetCodecV2("proto"), wirebound.Limits{ListEntries: 10_000, DecodedBytes: 64 << 20}}
}

func (c boundedCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("admin: cannot decode %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := c.limits.Check(buf.ReadOnlyData(), m.ProtoReflect().Descriptor()); err != nil {
		proto.Reset(m)
		refusal := protowire.AppendTag(nil, refusalField, protowire.BytesType)
		refusal = protowire.AppendString(refusal, "refused before decoding: "+err.Error())
		m.ProtoReflect().SetUnknown(refusal)
		return nil
	}
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

// refusal is the error boundedCodec left in req, if any.
func refusal(req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	unknown := m.ProtoReflect().GetUnknown()
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		if n < 0 {
			return nil
		}
		unknown = unknown[n:]
		if num == refusalField && typ == protowire.BytesType {
			text, _ := protowire.ConsumeString(unknown)
			return status.Error(codes.InvalidArgument, text)
		}
		if n = protowire.ConsumeFieldValue(num, typ, unknown); n < 0 {
			return nil
		}
		unknown = unknown[n:]
	}
	return nil
}

// refuseUndecodedUnary answers a unary request the codec refused.
func refuseUndecodedUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := refusal(req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

// refuseUndecodedStream answers a streamed request the codec refused.
func refuseUndecodedStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, refusingStream{ss})
}

type refusingStream struct{ grpc.ServerStream }

func (s refusingStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return refusal(m)
}
