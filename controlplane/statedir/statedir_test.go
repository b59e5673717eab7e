package statedir

import (
	"path/filepath"
	"testing"
)

func TestDefault(t *testing.T) {
	t.Setenv("DIRECTPIPE_STATE_DIR", "/tmp/dp-state")
	if got := Default(); got != "/tmp/dp-state" {
		t.Errorf("Default = %s", got)
	}
	t.Setenv("DIRECTPIPE_STATE_DIR", "")
	t.Setenv("XDG_STATE_HOME", "/tmp/xdg")
	if got := DefaultTokenFile(); got != filepath.Join("/tmp/xdg", "directpipe", TokenFile) {
		t.Errorf("DefaultTokenFile = %s", got)
	}
}
