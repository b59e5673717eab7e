package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/controlplane/policy"
)

const filePolicy = `# DEV SECRET: for development only
listeners: [{ name: public, address: "127.0.0.1:10000" }]   # the only listener
backends:
  - name: voice
    endpoints: ["127.0.0.1:8081"]
routes:
  - { name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice }
`

// TestFilePutSourceKeepsTheText: the file holds the text as written, its
// revision is the policy's, Source reads it back for that revision only,
// and an edit made since the expected revision is not overwritten.
func TestFilePutSourceKeepsTheText(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	other := func(port string) []byte {
		return []byte(strings.ReplaceAll(filePolicy, "8081", port))
	}
	if err := os.WriteFile(path, other("8082"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &File{Path: path}
	_, base, err := f.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policy.Parse([]byte(filePolicy))
	if err != nil {
		t.Fatal(err)
	}
	rev, err := f.PutSource(ctx, p, []byte(filePolicy), base)
	if err != nil {
		t.Fatal(err)
	}
	if rev != policy.Revision(p) {
		t.Errorf("revision %s, want the policy's %s", rev, policy.Revision(p))
	}
	if got, _ := os.ReadFile(path); string(got) != filePolicy {
		t.Errorf("the file holds\n%s\nwant the text as written\n%s", got, filePolicy)
	}
	if src, ok := f.Source(ctx, rev); !ok || string(src) != filePolicy {
		t.Errorf("Source(%s) = %q, %v", rev, src, ok)
	}
	if _, ok := f.Source(ctx, base); ok {
		t.Error("Source returned text for a revision the file does not hold")
	}
	// An operator's edit the control plane has not served yet.
	if err := os.WriteFile(path, other("8083"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PutSource(ctx, p, []byte(filePolicy), base); !errors.Is(err, ErrStale) {
		t.Errorf("PutSource over an unserved edit: %v, want ErrStale", err)
	}
}
