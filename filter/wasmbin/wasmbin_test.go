package wasmbin

import (
	"slices"
	"testing"
)

// A hand-assembled module: imports env.f (function) and exports "run".
var tiny = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
	0x02, 0x09, 0x01, 0x03, 'e', 'n', 'v', 0x01, 'f', 0x00, 0x00, // import env.f func type 0
	0x03, 0x02, 0x01, 0x00, // function section
	0x07, 0x07, 0x01, 0x03, 'r', 'u', 'n', 0x00, 0x01, // export "run" func 1
	0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code
}

func TestParse(t *testing.T) {
	m, err := Parse(tiny)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(m.Imports, []Import{{"env", "f"}}) || !slices.Equal(m.Exports, []string{"run"}) {
		t.Errorf("got %+v", m)
	}
}

func TestParseRejectsTruncated(t *testing.T) {
	for i := 0; i < len(tiny); i++ {
		if slices.Contains([]int{8, 14, 25, 29, 38}, i) {
			continue // a cut between sections leaves a valid, smaller module
		}
		if _, err := Parse(tiny[:i]); err == nil {
			t.Errorf("accepted %d of %d bytes", i, len(tiny))
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(tiny)
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse(b)
		ReadSizes(b)
	})
}

func TestReadSizes(t *testing.T) {
	// tiny with a name section naming function 1 "run".
	named := append(slices.Clone(tiny), 0x00, 0x0d, 0x04, 'n', 'a', 'm', 'e', 0x01, 0x06, 0x01, 0x01, 0x03, 'r', 'u', 'n')
	s, err := ReadSizes(named)
	if err != nil {
		t.Fatal(err)
	}
	if s.Sections["code"] != 4 || s.Sections["import"] != 9 || s.Sections["custom:name"] != 13 {
		t.Errorf("sections %v", s.Sections)
	}
	if len(s.Functions) != 1 || s.Functions[0] != (Function{Name: "run", Size: 2}) {
		t.Errorf("functions %+v", s.Functions)
	}
	if _, err := ReadSizes(named[:len(named)-3]); err == nil {
		t.Error("a truncated module was read")
	}
}
