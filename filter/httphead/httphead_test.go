package httphead

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

const upgrade = "GET /v1/stream?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Protocol: voice.v1, bearer.abc\r\nSec-WebSocket-Protocol: other\r\n\r\n"

func TestParse(t *testing.T) {
	h, n, err := Parse([]byte(upgrade + "trailing"))
	if err != nil {
		t.Fatal(err)
	}
	if n != len(upgrade) {
		t.Errorf("length %d, want %d", n, len(upgrade))
	}
	if h.Method != "GET" || h.Target != "/v1/stream?x=1" || h.Proto != "HTTP/1.1" {
		t.Errorf("request line %+v", h)
	}
	if v, ok := h.Get("sec-websocket-protocol"); !ok || v != "voice.v1, bearer.abc, other" {
		t.Errorf("combined value %q %v", v, ok)
	}
	if _, ok := h.Get("authorization"); ok {
		t.Error("absent header found")
	}
	if !h.HasToken("connection", "upgrade") || !h.HasToken("UPGRADE", "WebSocket") || h.HasToken("connection", "close") {
		t.Error("HasToken")
	}
	if got := string(h.Bytes()); got != upgrade {
		t.Errorf("round trip:\n%q\nwant\n%q", got, upgrade)
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct {
		name, in string
		want     error // nil: any error but ErrIncomplete
	}{
		{"tls client hello", "\x16\x03\x01\x02\x00", nil},
		{"bare LF", "GET / HTTP/1.1\nHost: a\n\n", nil},
		{"bare LF in a complete head", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", nil},
		{"folded line", "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", nil},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", nil},
		{"no colon", "GET / HTTP/1.1\r\nHost\r\n\r\n", nil},
		{"NUL in value", "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", nil},
		{"CR in value", "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", nil},
		{"HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", nil},
		{"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", nil},
		{"two spaces", "GET  / HTTP/1.1\r\n\r\n", nil},
		{"space in target", "GET /a b HTTP/1.1\r\n\r\n", nil},
		{"leading blank line", "\r\nGET / HTTP/1.1\r\n\r\n", nil},
		{"bad first line, unfinished head", "GET /\r\nHost: a\r\n", nil},
		{"bad field, unfinished head", "GET / HTTP/1.1\r\nHo st: a\r\n", nil},
		{"unfinished", "GET / HTTP/1.1\r\nHost: a\r\n", ErrIncomplete},
		{"unfinished line", "GET / HT", ErrIncomplete},
		{"empty", "", ErrIncomplete},
		{"too large", "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", contract.MaxHeadBytes), ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse([]byte(tt.in))
			switch {
			case err == nil:
				t.Fatal("accepted")
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("error %v, want %v", err, tt.want)
			case tt.want == nil && errors.Is(err, ErrIncomplete):
				t.Fatalf("waits for more instead of refusing: %v", err)
			}
		})
	}
}

func TestEdit(t *testing.T) {
	h, _, err := Parse([]byte("GET / HTTP/1.1\r\nX-User: spoof\r\nHost: a\r\nx-user: again\r\nAuthorization: Bearer t\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	h.Set("x-user", "alice")
	h.Del("authorization")
	h.Set("x-new", "1")
	want := []Field{{"X-User", "alice"}, {"Host", "a"}, {"x-new", "1"}}
	if !reflect.DeepEqual(h.Fields, want) {
		t.Errorf("fields %v, want %v", h.Fields, want)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(upgrade))
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		h, n, err := Parse(in)
		if err != nil {
			return
		}
		if n > len(in) || n > contract.MaxHeadBytes {
			t.Fatalf("length %d of %d bytes", n, len(in))
		}
		// What is forwarded must read back as what was checked.
		again, m, err := Parse(h.Bytes())
		if err != nil {
			t.Fatalf("serialised head does not parse: %v", err)
		}
		if m != len(h.Bytes()) || !reflect.DeepEqual(h, again) {
			t.Fatalf("round trip changed the head:\n%+v\n%+v", h, again)
		}
	})
}

// scanPieces feeds in to a Scanner in pieces of step bytes, as a
// connection's growing buffer, and checks every call against Parse of the
// same bytes: the same head, or the same kind of refusal.
func scanPieces(t *testing.T, in []byte, step int) *Scanner {
	t.Helper()
	var s Scanner
	for n := min(step, len(in)); ; n = min(n+step, len(in)) {
		h, m, err := s.Scan(in[:n])
		wantH, wantM, wantErr := Parse(in[:n])
		switch {
		case (err == nil) != (wantErr == nil),
			errors.Is(err, ErrIncomplete) != errors.Is(wantErr, ErrIncomplete):
			t.Fatalf("%q, %d of %d bytes: Scan says %v, Parse says %v", in, n, len(in), err, wantErr)
		case err == nil && (m != wantM || !reflect.DeepEqual(h, wantH)):
			t.Fatalf("%q: Scan read %+v (%d bytes), Parse %+v (%d)", in, h, m, wantH, wantM)
		}
		if err == nil || !errors.Is(err, ErrIncomplete) || n == len(in) {
			return &s
		}
	}
}

func TestScannerAgreesWithParse(t *testing.T) {
	inputs := []string{
		upgrade, upgrade + "trailing",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
		"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
		"GET / HTTP/1.1\r\nX: a\r\r\n\r\n",
		"GET / HTTP/1.1\r\n\n\r\n",
		"\x16\x03\x01\x02\x00",
		"\r\nGET / HTTP/1.1\r\n\r\n",
		"GET /\r\nHost: a\r\n",
		"GET / HTTP/1.1\r\nHost: a\r\n",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", contract.MaxHeadBytes),
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", contract.MaxHeadBytes-22) + "\r\n\r\n",
		"GET / HTTP/1.1\r\nX: " + strings.Repeat("a", contract.MaxHeadBytes-21) + "\r\n\r\n",
	}
	for _, in := range inputs {
		for _, step := range []int{1, 2, 3, 7, 100, len(in)} {
			if step < 100 && len(in) > 1000 {
				continue // TestScannerIsLinear sends big heads a byte at a time
			}
			scanPieces(t, []byte(in), step)
		}
	}
}

// TestScannerIsLinear: a head at the size limit sent a byte at a time is
// searched a few times over, not once per byte.
func TestScannerIsLinear(t *testing.T) {
	big := "GET / HTTP/1.1\r\nX-Pad: " + strings.Repeat("a", contract.MaxHeadBytes/2) + "\r\n"
	for len(big) < contract.MaxHeadBytes-40 {
		big += "X-Line: " + strings.Repeat("b", 30) + "\r\n"
	}
	for _, in := range []string{big + "\r\n", big, "GET / HTTP/1.1\r\nX: " + strings.Repeat("a", contract.MaxHeadBytes)} {
		var s Scanner
		var err error
		b := []byte(in)
		for n := 1; n <= len(b); n++ {
			if _, _, err = s.Scan(b[:n]); !errors.Is(err, ErrIncomplete) {
				break
			}
		}
		if _, _, want := Parse([]byte(in)); (err == nil) != (want == nil) || errors.Is(err, ErrIncomplete) != errors.Is(want, ErrIncomplete) {
			t.Errorf("%d bytes one at a time: %v, Parse says %v", len(in), err, want)
		}
		if s.examined > 4*len(in) {
			t.Errorf("%d bytes sent one at a time: %d searched, want at most %d", len(in), s.examined, 4*len(in))
		}
	}
}

func FuzzScanner(f *testing.F) {
	f.Add([]byte(upgrade), uint8(1))
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), uint8(3))
	f.Add([]byte("GET / HTTP/1.1\r\nX: a\r\r\n\r\n"), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, step uint8) {
		scanPieces(t, in, int(step%16)+1)
	})
}
