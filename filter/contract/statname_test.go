package contract

import (
	"strings"
	"testing"
)

func TestEscapeStatName(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"alice", "alice"},
		{"tenant.a/user 1", "tenant_2ea_2fuser_201"},
		{"a_b", "a_5fb"},
		{"Zed-9", "Zed-9"},
		{"\xff\x00", "_ff_00"},
		{"", ""},
	} {
		got := EscapeStatName(tt.in)
		if got != tt.want {
			t.Errorf("EscapeStatName(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if back, ok := UnescapeStatName(got); !ok || back != tt.in {
			t.Errorf("UnescapeStatName(%q) = %q, %v", got, back, ok)
		}
	}
	for _, bad := range []string{"a.b", "_2", "_zz", "_2E", "a b"} {
		if _, ok := UnescapeStatName(bad); ok {
			t.Errorf("UnescapeStatName(%q) accepted", bad)
		}
	}
}

func FuzzEscapeStatName(f *testing.F) {
	f.Add("tenant.a/user 1")
	f.Fuzz(func(t *testing.T, s string) {
		e := EscapeStatName(s)
		if strings.ContainsAny(e, ". ") {
			t.Fatalf("%q escaped to %q", s, e)
		}
		if back, ok := UnescapeStatName(e); !ok || back != s {
			t.Fatalf("round trip of %q: %q, %v", s, back, ok)
		}
	})
}
