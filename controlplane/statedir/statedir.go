// Package statedir says where the control plane keeps its state (the admin
// token) and where dpctl looks for it, so the two agree without flags.
package statedir

import (
	"os"
	"path/filepath"
)

// TokenFile is the admin token's file name inside the state directory.
const TokenFile = "admin.token"

// Default is $DIRECTPIPE_STATE_DIR, else $XDG_STATE_HOME/directpipe, else
// ~/.local/state/directpipe, else .directpipe in the working directory.
func Default() string {
	if d := os.Getenv("DIRECTPIPE_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "directpipe")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "directpipe")
	}
	return ".directpipe"
}

// DefaultTokenFile is the admin token file in the default state directory.
func DefaultTokenFile() string { return filepath.Join(Default(), TokenFile) }
