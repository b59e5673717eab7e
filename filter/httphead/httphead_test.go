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
