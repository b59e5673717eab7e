package buildinfo

import (
	"runtime"
	"testing"
)

func TestRead(t *testing.T) {
	info := Read()
	if info.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", info.GoVersion, runtime.Version())
	}
	// A test binary's main module is the one under test, built from a
	// work tree.
	if info.Version == "" {
		t.Error("Version is empty")
	}
}
