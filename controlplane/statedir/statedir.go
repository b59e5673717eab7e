// Package statedir says where the control plane keeps its state (the admin
// token) and where dpctl looks for it, so the two agree without flags.
package statedir

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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

// maxTokenBytes bounds a token file: tokens are a few dozen bytes.
const maxTokenBytes = 4 << 10

// ReadToken reads the admin token at path. A file that its group or other
// users may read or write is refused, as ssh refuses a private key: the
// token is every admin right, and a file anyone could read (or replace)
// gives them away. The mode is read from the open file, so a rename in
// between cannot swap what is checked for what is read.
func ReadToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read the admin token: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read the admin token: %w", err)
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("admin token %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("admin token %s has mode %04o: group and others may use it; run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxTokenBytes+1))
	if err != nil {
		return "", fmt.Errorf("read the admin token: %w", err)
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("admin token %s is more than %d bytes", path, maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("admin token %s is empty", path)
	}
	return tok, nil
}
