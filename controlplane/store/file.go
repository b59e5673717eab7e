package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// File is the policy file of a single control plane: read and watched as
// an operator edits it, and written atomically by admin API applies. Its
// Put is called by one control plane, which serialises its applies.
type File struct {
	Path string
	Log  *slog.Logger
	// Rejected, when set, is called with why the file, as edited, does not
	// read or parse (the last good policy keeps serving).
	Rejected func(error)

	// mu guards sum, which Put sets and the watcher reads.
	mu sync.Mutex
	// sum is the file's bytes as this process last wrote or checked them:
	// the same bytes need no parsing to be checked again.
	sum policy.FileSum
}

// Load reads and validates the file.
func (f *File) Load(context.Context) (*policyv1.Policy, string, error) {
	p, err := policy.LoadFile(f.Path)
	if err != nil {
		return nil, "", err
	}
	return p, policy.Revision(p), nil
}

// Put writes the file atomically. The control plane has compared
// expected with what it serves; here the file itself must still hold it,
// so that an operator's edit the watcher has not applied yet (or one that
// does not load) is never overwritten silently.
func (f *File) Put(_ context.Context, p *policyv1.Policy, expected string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.sum, err = policy.CheckFile(f.Path, expected, f.sum); err != nil {
		return "", fmt.Errorf("%w: %w", ErrStale, err)
	}
	if f.sum, err = policy.WriteFile(f.Path, p); err != nil {
		return "", err
	}
	return policy.Revision(p), nil
}

// PutSource is Put that writes source, the policy as the user wrote it
// (it must decode to p), so that comments, order and formatting survive
// an apply through the API.
func (f *File) PutSource(_ context.Context, p *policyv1.Policy, source []byte, expected string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var err error
	if f.sum, err = policy.CheckFile(f.Path, expected, f.sum); err != nil {
		return "", fmt.Errorf("%w: %w", ErrStale, err)
	}
	if f.sum, err = policy.WriteSource(f.Path, source, p); err != nil {
		return "", err
	}
	return policy.Revision(p), nil
}

// Source returns the file's text if it holds the policy of revision rev:
// what `dpctl policy get` shows, comments and all.
func (f *File) Source(_ context.Context, rev string) ([]byte, bool) {
	data, err := policy.ReadFile(f.Path)
	if err != nil {
		return nil, false
	}
	p, err := policy.Decode(data)
	if err != nil || policy.Revision(p) != rev {
		return nil, false
	}
	return data, true
}

// wrote reports whether sum is of the bytes this process last wrote (or
// checked as serving): the watcher need not parse them.
func (f *File) wrote(sum policy.FileSum) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return sum == f.sum && sum != policy.FileSum{}
}

// Watch calls onChange each time the file changes to a valid policy.
func (f *File) Watch(ctx context.Context, onChange func(*policyv1.Policy) error) error {
	return policy.WatchFile(ctx, f.Path, f.logger(), f.wrote, onChange, f.Rejected)
}

// History is not kept for a file: its history is the operator's (version
// control, backups).
func (f *File) History(context.Context) ([]Entry, error) {
	return nil, errors.New("the file store keeps no history: run with -store etcd://... for policy history and rollback")
}

// Close does nothing.
func (f *File) Close() error { return nil }

func (f *File) logger() *slog.Logger {
	if f.Log == nil {
		return slog.Default()
	}
	return f.Log
}
