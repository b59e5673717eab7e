package elfbin

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestExports reads libc, a shared object every Linux host has: it exports
// malloc, and the functions it only imports are not listed.
func TestExports(t *testing.T) {
	libc, err := filepath.Glob("/usr/lib/*-linux-gnu/libc.so.6")
	if err != nil || len(libc) == 0 {
		t.Fatalf("no libc.so.6 to read: %v", err)
	}
	b, err := os.ReadFile(libc[0])
	if err != nil {
		t.Fatal(err)
	}
	got, err := Exports(b)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got, "malloc") {
		t.Errorf("libc exports no malloc: %d names", len(got))
	}
	if !slices.IsSorted(got) {
		t.Error("exports are not sorted")
	}
}

func TestExportsRefusesOthers(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":     nil,
		"wasm":      {0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00},
		"truncated": []byte("\x7fELF\x02\x01\x01"),
	} {
		if _, err := Exports(b); err == nil {
			t.Errorf("%s: read as a shared object", name)
		}
	}
}
