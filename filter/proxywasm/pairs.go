package proxywasm

import (
	"encoding/binary"
	"errors"
)

// The spec's header map encoding: a little-endian uint32 count, then per
// pair the uint32 sizes of name and value, then per pair the name and value
// bytes, each followed by a NUL.

var errShortPairs = errors.New("proxywasm: truncated header map")

// EncodePairs serialises name/value pairs for the host.
func EncodePairs(pairs [][2]string) []byte {
	size := 4
	for _, p := range pairs {
		size += 8 + len(p[0]) + len(p[1]) + 2
	}
	out := make([]byte, 0, size)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(pairs)))
	for _, p := range pairs {
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[0])))
		out = binary.LittleEndian.AppendUint32(out, uint32(len(p[1])))
	}
	for _, p := range pairs {
		out = append(out, p[0]...)
		out = append(out, 0)
		out = append(out, p[1]...)
		out = append(out, 0)
	}
	return out
}

// DecodePairs parses a host header map, refusing anything inconsistent
// rather than reading past its end.
func DecodePairs(b []byte) ([][2]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if len(b) < 4 {
		return nil, errShortPairs
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n > (len(b)-4)/8 {
		return nil, errShortPairs
	}
	sizes := b[4 : 4+8*n]
	data := b[4+8*n:]
	out := make([][2]string, 0, n)
	for i := range n {
		ks := int(binary.LittleEndian.Uint32(sizes[8*i:]))
		vs := int(binary.LittleEndian.Uint32(sizes[8*i+4:]))
		if ks < 0 || vs < 0 || ks+vs+2 > len(data) {
			return nil, errShortPairs
		}
		k := string(data[:ks])
		data = data[ks+1:]
		v := string(data[:vs])
		data = data[vs+1:]
		out = append(out, [2]string{k, v})
	}
	return out, nil
}
