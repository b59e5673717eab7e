// Package store keeps the policy a control plane serves: in a file, for one
// control plane (the default), or in etcd, for replicas that share one
// policy. Either way a policy is named by its content revision
// (policy.Revision), so an expected revision means the same thing in every
// replica and after every restart.
package store

import (
	"context"
	"errors"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// ErrStale is returned by Put when the stored revision is not the expected
// one: someone else applied a change first.
var ErrStale = errors.New("policy changed since the expected revision")

// ErrUnavailable is returned when the store cannot be reached: the last good
// policy keeps serving, but nothing can be changed until it is back.
var ErrUnavailable = errors.New("policy store unreachable")

// ErrReadOnly is returned by Put of a store whose policy is changed
// elsewhere (Kubernetes resources, through the API server).
var ErrReadOnly = errors.New("this policy store is not written by the control plane")

// ErrNotFound is returned by Load when the store holds no policy yet.
var ErrNotFound = errors.New("no policy stored yet")

// Store is where the served policy lives.
type Store interface {
	// Load returns the stored policy and its revision (ErrNotFound when
	// there is none).
	Load(ctx context.Context) (*policyv1.Policy, string, error)
	// Put stores p and returns its revision. A shared store compares
	// expected with the stored revision in the same step and refuses with
	// ErrStale; a file has one writer, the control plane that owns it,
	// which checks before it calls Put.
	Put(ctx context.Context, p *policyv1.Policy, expected string) (string, error)
	// Watch calls onChange with each policy the store holds from now on
	// (and with the current one first, for a shared store), until ctx
	// ends. A value that does not parse is logged and skipped: the last
	// good policy keeps serving.
	Watch(ctx context.Context, onChange func(*policyv1.Policy) error) error
	// History returns up to the last few stored policies, newest first.
	History(ctx context.Context) ([]Entry, error)
	// Close releases the store's connections.
	Close() error
}

// SourceStore is a store that keeps a policy's text as the user wrote it
// (the file store): comments, order and formatting survive an apply.
type SourceStore interface {
	// PutSource is Put that stores source, which decodes to p.
	PutSource(ctx context.Context, p *policyv1.Policy, source []byte, expected string) (string, error)
	// Source returns the stored text if it holds revision rev.
	Source(ctx context.Context, rev string) ([]byte, bool)
}

// Entry is one stored revision of the policy.
type Entry struct {
	Revision  string
	AppliedAt time.Time
	// By names the replica that stored it.
	By     string
	Policy *policyv1.Policy
}

// Shared is a store that replicas share (etcd): the policy, plus what
// replicas coordinate through it.
type Shared interface {
	Store
	// PublishNodes records, under this replica's lease, the nodes it
	// serves now (by node id, opaque bytes); records of nodes it no longer
	// serves are removed, and all of them vanish with the lease if the
	// replica dies.
	PublishNodes(ctx context.Context, nodes map[string][]byte) error
	// Nodes returns every replica's node records.
	Nodes(ctx context.Context) ([]NodeRecord, error)
	// Lead runs fn whenever this replica holds the named election (with
	// ctx ending when it loses it), and returns when ctx ends.
	Lead(ctx context.Context, name string, fn func(ctx context.Context)) error
	// PutValue stores a value every replica reads (e.g. fetched keys).
	PutValue(ctx context.Context, name string, value []byte) error
	// Value reads one stored value.
	Value(ctx context.Context, name string) ([]byte, bool, error)
	// WatchValues calls fn with every stored value, then with each change,
	// until ctx ends.
	WatchValues(ctx context.Context, fn func(name string, value []byte)) error
}

// NodeRecord is one node as the replica that serves it recorded it.
type NodeRecord struct {
	Replica string
	Node    string
	Value   []byte
}
