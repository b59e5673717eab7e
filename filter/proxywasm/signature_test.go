package proxywasm

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestEncodeVerifyArgs(t *testing.T) {
	got := encodeVerifyArgs("sha256", []byte{1, 2}, []byte{3}, []byte("ab"))
	want := []byte{0x0a, 6, 's', 'h', 'a', '2', '5', '6', 0x12, 2, 1, 2, 0x1a, 1, 3, 0x22, 2, 'a', 'b'}
	if !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
}

func TestDecodeVerifyResult(t *testing.T) {
	var unknown []byte
	unknown = protowire.AppendTag(unknown, 9, protowire.Fixed32Type)
	unknown = protowire.AppendFixed32(unknown, 7)
	tests := []struct {
		name string
		in   []byte
		ok   bool
		msg  string
		err  bool
	}{
		{"verified", []byte{0x08, 1, 0x12, 0}, true, "", false},
		{"refused", append([]byte{0x12, 4}, "nope"...), false, "nope", false},
		{"empty is false", nil, false, "", false},
		{"unknown field skipped", append(unknown, 0x08, 1), true, "", false},
		{"truncated", []byte{0x12, 9, 'x'}, false, "", true},
		{"bad tag", []byte{0xff}, false, "", true},
	}
	for _, tt := range tests {
		ok, msg, err := decodeVerifyResult(tt.in)
		if ok != tt.ok || msg != tt.msg || (err != nil) != tt.err {
			t.Errorf("%s: %v %q %v", tt.name, ok, msg, err)
		}
	}
}
