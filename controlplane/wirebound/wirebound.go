// Package wirebound bounds an encoded protobuf message before it is
// decoded. gRPC bounds a message's bytes, but decoding allocates a Go
// struct of tens to hundreds of bytes for every nested message, and the
// smallest message is two bytes on the wire: 4 MiB of empty routes once
// decoded to hundreds of MiB before anything could count them.
package wirebound

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Limits bound what a message may hold.
type Limits struct {
	// ListEntries bounds every repeated field (and map) of every message.
	ListEntries int
	// DecodedBytes bounds what the message's nested messages would take
	// once decoded, estimated from their fields (decodedSize).
	DecodedBytes int
}

// maxDepth bounds how deep the walk goes; protobuf's own decoder refuses
// more than 10,000 levels, and no message served here nests a tenth of
// this.
const maxDepth = 64

var errDepth = fmt.Errorf("the message nests more than %d levels deep", maxDepth)

// decodedSize estimates the Go struct of a message: a header and a word
// or two for each field. An empty policy Route (21 fields) measures about
// 400 bytes decoded, slice growth included.
func decodedSize(md protoreflect.MessageDescriptor) int {
	return 48 + 16*md.Fields().Len()
}

// Check refuses an encoded message of type md that holds a list of more
// than l.ListEntries entries, or nested messages that would decode to more
// than l.DecodedBytes, without decoding it: it allocates nothing but a
// count per repeated field of the message being walked. Bytes that are
// not a valid encoding are left for the decoder to refuse.
func (l Limits) Check(b []byte, md protoreflect.MessageDescriptor) error {
	budget := l.DecodedBytes
	return l.check(b, md, 0, &budget)
}

func (l Limits) check(b []byte, md protoreflect.MessageDescriptor, depth int, budget *int) error {
	if depth > maxDepth {
		return errDepth
	}
	fields := md.Fields()
	var counts map[protowire.Number]int
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		fd := fields.ByNumber(num)
		if fd != nil && fd.Cardinality() == protoreflect.Repeated {
			if counts == nil {
				counts = map[protowire.Number]int{}
			}
			counts[num]++
			if counts[num] > l.ListEntries {
				return fmt.Errorf("%s: more than the %d entries a list may have", fd.Name(), l.ListEntries)
			}
		}
		if typ != protowire.BytesType || fd == nil || fd.Message() == nil {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return nil
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if *budget -= decodedSize(fd.Message()); *budget < 0 {
			return fmt.Errorf("its messages would take more than the %d MiB a request may take decoded", l.DecodedBytes>>20)
		}
		if err := l.check(v, fd.Message(), depth+1, budget); err != nil {
			if errors.Is(err, errDepth) {
				return err
			}
			return fmt.Errorf("%s: %w", fd.Name(), err)
		}
	}
	return nil
}

// Codec is gRPC's proto codec with l checked before every message is
// decoded. gRPC answers a refusal Internal; a server that must answer
// its clients' mistakes InvalidArgument checks l itself (as the admin API
// does).
func Codec(l Limits) encoding.CodecV2 {
	return codec{encoding.GetCodecV2("proto"), l}
}

type codec struct {
	encoding.CodecV2
	limits Limits
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("cannot decode %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := c.limits.Check(buf.ReadOnlyData(), m.ProtoReflect().Descriptor()); err != nil {
		return fmt.Errorf("refused before decoding: %w", err)
	}
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}
