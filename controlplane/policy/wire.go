package policy

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Bounds of an encoded message that carries a policy, checked on the wire
// before it is decoded. Decoding allocates a Go struct of a few hundred
// bytes for every nested message, and the smallest message is two bytes
// on the wire: a 4 MiB apply of empty routes once decoded to about
// 140 MiB before Validate could count them. The largest valid policy
// holds far fewer of both.
const (
	// MaxWireListEntries bounds every repeated field of a message: no list
	// of a policy may hold more than this (MaxRoutes, MaxBackends and
	// MaxAPIKeys are the largest).
	MaxWireListEntries = 10_000
	// MaxWireDecodedBytes bounds what the nested messages of a whole
	// request would take once decoded, estimated from each message's
	// fields (decodedSize): ten thousand routes with their matchers, back
	// ends with their endpoints and auth policies with their keys take a
	// few tens of megabytes at most.
	MaxWireDecodedBytes = 64 << 20
)

// decodedSize estimates the Go struct of a message: a header and a word
// or two for each field. An empty Route (21 fields) measures about 400
// bytes decoded, slice growth included.
func decodedSize(md protoreflect.MessageDescriptor) int {
	return 48 + 16*md.Fields().Len()
}

// maxWireDepth bounds how deep the walk goes; the policy's messages nest a
// few levels, and protobuf's own decoder refuses more than 10,000.
const maxWireDepth = 64

// CheckWire refuses an encoded message of type md that holds a list of
// more than MaxWireListEntries entries or messages that would decode to
// more than MaxWireDecodedBytes, without decoding it: it allocates nothing but a count per
// repeated field of the message it is in. Bytes that are not a valid
// encoding are left for the decoder to refuse.
func CheckWire(b []byte, md protoreflect.MessageDescriptor) error {
	budget := MaxWireDecodedBytes
	return checkWire(b, md, 0, &budget)
}

var errDepth = errors.New("the message nests more than 64 levels deep")

func checkWire(b []byte, md protoreflect.MessageDescriptor, depth int, budget *int) error {
	if depth > maxWireDepth {
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
			if counts[num] > MaxWireListEntries {
				return fmt.Errorf("%s: more than the %d entries a list may have", fd.Name(), MaxWireListEntries)
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
			return fmt.Errorf("its messages would take more than the %d MiB a request may take decoded", MaxWireDecodedBytes>>20)
		}
		if err := checkWire(v, fd.Message(), depth+1, budget); err != nil {
			if errors.Is(err, errDepth) {
				return err
			}
			return fmt.Errorf("%s: %w", fd.Name(), err)
		}
	}
	return nil
}
