package proxywasm

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestEncodeFilterStateArgs(t *testing.T) {
	b := encodeFilterStateArgs("envoy.tcp_proxy.cluster", "directpipe-deny")
	got := map[protowire.Number]any{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatal(protowire.ParseError(n))
		}
		b = b[n:]
		switch typ {
		case protowire.BytesType:
			v, n := protowire.ConsumeString(b)
			if n < 0 {
				t.Fatal(protowire.ParseError(n))
			}
			got[num], b = v, b[n:]
		case protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				t.Fatal(protowire.ParseError(n))
			}
			got[num], b = v, b[n:]
		default:
			t.Fatalf("field %d has wire type %d", num, typ)
		}
	}
	want := map[protowire.Number]any{1: "envoy.tcp_proxy.cluster", 2: "directpipe-deny", 3: uint64(2)}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %d = %v, want %v", k, got[k], v)
		}
	}
}
