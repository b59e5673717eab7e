package store

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
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

// TestFileSizeBound: a policy file over policy.MaxPolicyBytes is refused
// unparsed, with the bound, at start and when an edit makes it so (the
// last good policy keeps serving); and the file store never writes one.
func TestFileSizeBound(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	huge := []byte(filePolicy + "#" + strings.Repeat("x", policy.MaxPolicyBytes) + "\n")
	if err := os.WriteFile(path, huge, 0o644); err != nil {
		t.Fatal(err)
	}
	const bound = "more than the 4194304 bytes (4 MiB) a policy may have"
	rejected := make(chan error, 4)
	f := &File{Path: path, Log: slog.New(slog.DiscardHandler), Rejected: func(err error) { rejected <- err }}
	if _, _, err := f.Load(ctx); err == nil || !strings.Contains(err.Error(), bound) {
		t.Fatalf("Load: %v, want the size refusal", err)
	}

	if err := os.WriteFile(path, []byte(filePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	_, base, err := f.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	applied := make(chan struct{}, 4)
	done := make(chan error, 1)
	go func() { done <- f.Watch(ctx, func(*policyv1.Policy) error { applied <- struct{}{}; return nil }) }()
	<-applied // the watcher reads the file at start
	tmp := filepath.Join(dir, "next.yaml")
	if err := os.WriteFile(tmp, huge, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-rejected:
		if !strings.Contains(err.Error(), bound) {
			t.Errorf("rejected for %v, want the size refusal", err)
		}
	case <-applied:
		t.Fatal("an oversized file was applied")
	case <-time.After(20 * time.Second):
		t.Fatal("an oversized file was neither applied nor rejected")
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}

	p, err := policy.Parse([]byte(filePolicy))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(filePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PutSource(context.Background(), p, huge, base); err == nil || !strings.Contains(err.Error(), bound) {
		t.Errorf("PutSource: %v, want the size refusal", err)
	}
}
