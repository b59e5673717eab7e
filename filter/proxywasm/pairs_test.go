package proxywasm

import (
	"slices"
	"testing"
)

func TestPairsRoundTrip(t *testing.T) {
	tests := [][][2]string{
		nil,
		{{":path", "/v1/voice?x=1"}},
		{{"a", ""}, {"", "b"}, {"authorization", "Bearer abc.def.ghi"}},
	}
	for _, pairs := range tests {
		got, err := DecodePairs(EncodePairs(pairs))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, pairs) && !(len(got) == 0 && len(pairs) == 0) {
			t.Errorf("round trip: %q, want %q", got, pairs)
		}
	}
}

func TestDecodePairsRejectsTruncated(t *testing.T) {
	full := EncodePairs([][2]string{{"name", "value"}})
	for i := 1; i < len(full); i++ {
		if _, err := DecodePairs(full[:i]); err == nil {
			t.Errorf("DecodePairs accepted %d of %d bytes", i, len(full))
		}
	}
	if _, err := DecodePairs([]byte{0xff, 0xff, 0xff, 0x7f}); err == nil {
		t.Error("DecodePairs accepted a huge count")
	}
}

func FuzzDecodePairs(f *testing.F) {
	f.Add(EncodePairs([][2]string{{"k", "v"}}))
	f.Fuzz(func(t *testing.T, b []byte) { DecodePairs(b) })
}
