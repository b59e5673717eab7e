//go:build !wasip1

package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

const (
	// MaxPolicyBytes bounds the stored policy: the policy, its history
	// copy and the rest of the transaction must fit in one etcd request
	// (about 1.5 MiB by default).
	MaxPolicyBytes = 512 << 10
	// opTimeout bounds every etcd call: an apply against an unreachable
	// etcd fails within it instead of hanging the admin API.
	opTimeout = 5 * time.Second
	// relistDelay spaces re-reads after a watch ends (no leader, member
	// gone, compaction), so a down cluster is not spun against.
	relistDelay = 500 * time.Millisecond
)

// Etcd keeps the policy in etcd, shared by every replica.
type Etcd struct {
	cfg    EtcdConfig
	cli    *clientv3.Client
	log    *slog.Logger
	leases leases
}

// NewEtcd connects to etcd. It does not wait for etcd to answer: a replica
// starts (not ready) while etcd is down and loads once it is back.
func NewEtcd(cfg EtcdConfig) (Shared, error) {
	return newEtcd(cfg)
}

func newEtcd(cfg EtcdConfig) (*Etcd, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd store: no endpoint")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.History <= 0 {
		cfg.History = DefaultHistory
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Replica == "" {
		return nil, errors.New("etcd store: the replica needs a name")
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		TLS:         cfg.TLS,
		DialTimeout: opTimeout,
		// Keepalives notice a dead member within seconds, so the client
		// moves to another endpoint.
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		// The client's own zap logs repeat what the errors say.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcd store: %w", err)
	}
	return &Etcd{cfg: cfg, cli: cli, log: cfg.Log}, nil
}

// Client is the etcd client, for elections and node records.
func (e *Etcd) Client() *clientv3.Client { return e.cli }

// Config is the store's configuration with defaults filled in.
func (e *Etcd) Config() EtcdConfig { return e.cfg }

// Close gives up this replica's lease (its node records and leaderships
// go at once) and closes the client.
func (e *Etcd) Close() error {
	e.leases.mu.Lock()
	if s := e.leases.sess; s != nil {
		_ = s.Close()
	}
	e.leases.mu.Unlock()
	return e.cli.Close()
}

func (e *Etcd) policyKey() string   { return e.cfg.Prefix + "policy" }
func (e *Etcd) revisionKey() string { return e.cfg.Prefix + "revision" }
func (e *Etcd) sourceKey() string   { return e.cfg.Prefix + "source" }
func (e *Etcd) historyPrefix() string {
	return e.cfg.Prefix + "history/"
}

// unavailable classifies an etcd error: a refused or timed-out call means
// the store cannot be reached now.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
}

// Load reads the policy.
func (e *Etcd) Load(ctx context.Context) (*policyv1.Policy, string, error) {
	p, rev, _, err := e.load(ctx)
	return p, rev, err
}

// load reads the policy and the etcd revision the read saw.
func (e *Etcd) load(ctx context.Context) (*policyv1.Policy, string, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.policyKey())
	if err != nil {
		return nil, "", 0, unavailable("read the policy", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, "", resp.Header.Revision, ErrNotFound
	}
	p, err := decode(resp.Kvs[0].Value)
	if err != nil {
		return nil, "", resp.Header.Revision, err
	}
	return p, policy.Revision(p), resp.Header.Revision, nil
}

// encode is the stored form of a policy: its deterministic protobuf bytes,
// the same bytes its revision hashes.
func encode(p *policyv1.Policy) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	if len(b) > MaxPolicyBytes {
		return nil, fmt.Errorf("policy is %d bytes encoded, more than the %d the etcd store holds", len(b), MaxPolicyBytes)
	}
	return b, nil
}

func decode(b []byte) (*policyv1.Policy, error) {
	p := &policyv1.Policy{}
	if err := proto.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("stored policy does not decode: %w", err)
	}
	if err := policy.Validate(p); err != nil {
		return nil, fmt.Errorf("stored policy is invalid: %w", err)
	}
	return p, nil
}

// historyEntry is the stored form of an Entry.
type historyEntry struct {
	Revision  string    `json:"revision"`
	AppliedAt time.Time `json:"applied_at"`
	By        string    `json:"by"`
	Policy    []byte    `json:"policy"`
}

// Put stores p if the stored revision is expected ("" for a store that
// holds no policy yet), in one transaction with its history entry, so two
// replicas applying on the same revision cannot both win.
func (e *Etcd) Put(ctx context.Context, p *policyv1.Policy, expected string) (string, error) {
	return e.put(ctx, p, nil, expected)
}

// PutSource is Put that also keeps source, the policy as the user wrote
// it (it decodes to p), for `dpctl policy get`: replicas serve the policy
// from its protobuf form either way. Text too large to share the
// transaction with the policy and its history copy is not kept.
func (e *Etcd) PutSource(ctx context.Context, p *policyv1.Policy, source []byte, expected string) (string, error) {
	return e.put(ctx, p, source, expected)
}

// Source returns the text stored with the policy, if the policy stored
// now is of revision rev and was stored with its text.
func (e *Etcd) Source(ctx context.Context, rev string) ([]byte, bool) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.cli.Txn(ctx).Then(clientv3.OpGet(e.revisionKey()), clientv3.OpGet(e.sourceKey())).Commit()
	if err != nil {
		return nil, false
	}
	revs, srcs := resp.Responses[0].GetResponseRange().GetKvs(), resp.Responses[1].GetResponseRange().GetKvs()
	if len(revs) == 0 || len(srcs) == 0 || string(revs[0].Value) != rev {
		return nil, false
	}
	return srcs[0].Value, true
}

// maxTxnBytes is what one transaction may carry with room to spare under
// etcd's default request limit.
const maxTxnBytes = 1400 << 10

func (e *Etcd) put(ctx context.Context, p *policyv1.Policy, source []byte, expected string) (string, error) {
	b, err := encode(p)
	if err != nil {
		return "", err
	}
	rev := policy.Revision(p)
	now := time.Now().UTC()
	hist, err := json.Marshal(historyEntry{Revision: rev, AppliedAt: now, By: e.cfg.Replica, Policy: b})
	if err != nil {
		return "", fmt.Errorf("encode history entry: %w", err)
	}
	// Keys sort by time, then revision: history lists them newest first.
	histKey := fmt.Sprintf("%s%020d-%s", e.historyPrefix(), now.UnixNano(), rev)
	cmp := clientv3.Compare(clientv3.Value(e.revisionKey()), "=", expected)
	if expected == "" {
		cmp = clientv3.Compare(clientv3.CreateRevision(e.revisionKey()), "=", 0)
	}
	tctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// The text goes in the same transaction, so that it is never paired
	// with another revision; without it, the last text is removed.
	text := clientv3.OpDelete(e.sourceKey())
	if source != nil && len(b)+len(hist)+len(source) <= maxTxnBytes {
		text = clientv3.OpPut(e.sourceKey(), string(source))
	}
	resp, err := e.cli.Txn(tctx).If(cmp).
		Then(clientv3.OpPut(e.policyKey(), string(b)), clientv3.OpPut(e.revisionKey(), rev), clientv3.OpPut(histKey, string(hist)), text).
		Else(clientv3.OpGet(e.revisionKey())).
		Commit()
	if err != nil {
		return "", unavailable("apply the policy", err)
	}
	if !resp.Succeeded {
		current := "(none)"
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
			current = string(kvs[0].Value)
		}
		if expected == "" {
			expected = "(none)"
		}
		return "", fmt.Errorf("%w: current revision is %s, not %s", ErrStale, current, expected)
	}
	if err := e.trimHistory(ctx); err != nil {
		e.log.Warn("trimming the policy history failed; it is retried at the next apply", "error", err)
	}
	return rev, nil
}

// trimHistory deletes all but the newest cfg.History entries.
func (e *Etcd) trimHistory(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.historyPrefix(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
	if err != nil {
		return err
	}
	if len(resp.Kvs) <= e.cfg.History {
		return nil
	}
	oldestKept := string(resp.Kvs[e.cfg.History-1].Key)
	_, err = e.cli.Delete(ctx, e.historyPrefix(), clientv3.WithRange(oldestKept))
	return err
}

// History returns the kept revisions, newest first.
func (e *Etcd) History(ctx context.Context) ([]Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.historyPrefix(), clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(int64(e.cfg.History)))
	if err != nil {
		return nil, unavailable("read the policy history", err)
	}
	out := make([]Entry, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var h historyEntry
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			e.log.Warn("skipping a history entry that does not decode", "key", string(kv.Key), "error", err)
			continue
		}
		p, err := decode(h.Policy)
		if err != nil {
			e.log.Warn("skipping a history entry", "key", string(kv.Key), "error", err)
			continue
		}
		out = append(out, Entry{Revision: h.Revision, AppliedAt: h.AppliedAt, By: h.By, Policy: p})
	}
	return out, nil
}

// Watch reads the policy, then watches it from the revision it read. A
// watch that ends — the member lost its leader (WithRequireLeader makes
// that an error instead of a silent hang), the member went away, or the
// revision was compacted — is followed by a fresh read and a new watch,
// so no change is missed and none is applied twice out of order.
func (e *Etcd) Watch(ctx context.Context, onChange func(*policyv1.Policy) error) error {
	deliver := func(p *policyv1.Policy) {
		if err := onChange(p); err != nil {
			e.log.Error("stored policy not applied; the last good policy keeps serving", "revision", policy.Revision(p), "error", err)
		}
	}
	for ctx.Err() == nil {
		p, _, seen, err := e.load(ctx)
		switch {
		case errors.Is(err, ErrNotFound):
			// Nothing to serve yet; the watch below delivers the first apply.
		case err != nil && seen == 0:
			e.log.Warn("reading the policy from etcd failed; the last good policy keeps serving", "error", err)
			sleep(ctx, relistDelay)
			continue
		case err != nil:
			e.log.Error("the stored policy is refused; the last good policy keeps serving", "error", err)
		default:
			deliver(p)
		}
		e.watchFrom(ctx, seen+1, deliver)
		sleep(ctx, relistDelay)
	}
	return nil
}

// watchFrom delivers every change of the policy key from etcd revision
// rev until the watch ends.
func (e *Etcd) watchFrom(ctx context.Context, rev int64, deliver func(*policyv1.Policy)) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range e.cli.Watch(wctx, e.policyKey(), clientv3.WithRev(rev)) {
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				e.log.Info("policy watch fell behind a compaction; reading the policy again", "compacted", resp.CompactRevision)
			} else {
				e.log.Warn("policy watch ended; reading the policy again", "error", err)
			}
			return
		}
		for _, ev := range resp.Events {
			if ev.Type != clientv3.EventTypePut {
				e.log.Warn("the stored policy was deleted; the last good policy keeps serving")
				continue
			}
			p, err := decode(ev.Kv.Value)
			if err != nil {
				e.log.Error("the stored policy is refused; the last good policy keeps serving", "error", err)
				continue
			}
			deliver(p)
		}
	}
	if ctx.Err() == nil {
		e.log.Warn("policy watch closed; reading the policy again")
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
