package admin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadOrCreateToken: the control plane creates a private token file,
// reads it back on the next start, and refuses to start on one that group
// or others may read.
func TestLoadOrCreateToken(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "admin.token")
	tok, err := LoadOrCreateToken(path)
	if err != nil || tok == "" {
		t.Fatalf("create: %q, %v", tok, err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("created with %v, %v; want 0600", info.Mode(), err)
	}
	if again, err := LoadOrCreateToken(path); err != nil || again != tok {
		t.Fatalf("second start read %q, %v; want %q", again, err, tok)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateToken(path); err == nil || !strings.Contains(err.Error(), "has mode 0644") {
		t.Fatalf("a world-readable token file: %v, want a refusal", err)
	}
}
