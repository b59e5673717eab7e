package statedir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadToken: a token file is read only when nobody but its owner may
// read or write it.
func TestReadToken(t *testing.T) {
	for _, tt := range []struct {
		name    string
		content string
		perm    os.FileMode
		want    string // token, or the error's text
		wantErr bool
	}{
		{"owner only", "tok\n", 0o600, "tok", false},
		{"owner read-only", "tok", 0o400, "tok", false},
		{"world readable", "tok", 0o644, "has mode 0644: group and others may use it; run chmod 600", true},
		{"group readable", "tok", 0o640, "has mode 0640", true},
		{"group writable", "tok", 0o620, "has mode 0620", true},
		{"world writable", "tok", 0o602, "has mode 0602", true},
		{"empty", "\n", 0o600, "is empty", true},
		{"too large", strings.Repeat("t", maxTokenBytes+1), 0o600, "more than", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), TokenFile)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.perm); err != nil {
				t.Fatal(err)
			}
			got, err := ReadToken(path)
			switch {
			case tt.wantErr && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ReadToken = %q, %v; want an error containing %q", got, err, tt.want)
			case !tt.wantErr && (err != nil || got != tt.want):
				t.Errorf("ReadToken = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := ReadToken(t.TempDir()); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
}
