//go:build !wasip1

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// leases is this replica's one etcd session: the lease its node records
// and its leaderships hang on. A new session is made when the old one's
// lease is lost (etcd unreachable for longer than the TTL).
type leases struct {
	mu   sync.Mutex
	sess *concurrency.Session
	// published is what the current session's node records hold.
	published map[string][]byte
}

// session returns the live session, making a new one if needed.
func (e *Etcd) session(ctx context.Context) (*concurrency.Session, error) {
	e.leases.mu.Lock()
	defer e.leases.mu.Unlock()
	return e.sessionLocked(ctx)
}

func (e *Etcd) sessionLocked(ctx context.Context) (*concurrency.Session, error) {
	if s := e.leases.sess; s != nil {
		select {
		case <-s.Done():
		default:
			return s, nil
		}
	}
	ttl := int(e.cfg.LeaseTTL.Seconds())
	if ttl < 1 {
		ttl = 1
	}
	gctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	// Granted here, bounded; the session only keeps it alive, for as long
	// as the client lives.
	lease, err := e.cli.Grant(gctx, int64(ttl))
	if err != nil {
		return nil, unavailable("open a lease", err)
	}
	s, err := concurrency.NewSession(e.cli, concurrency.WithLease(lease.ID), concurrency.WithTTL(ttl), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, unavailable("open a lease", err)
	}
	e.leases.sess, e.leases.published = s, map[string][]byte{}
	return s, nil
}

func (e *Etcd) nodesPrefix() string { return e.cfg.Prefix + "nodes/" }

func (e *Etcd) nodeKey(node string) string {
	return e.nodesPrefix() + url.PathEscape(e.cfg.Replica) + "/" + url.PathEscape(node)
}

// PublishNodes writes what changed since the last call.
func (e *Etcd) PublishNodes(ctx context.Context, nodes map[string][]byte) error {
	e.leases.mu.Lock()
	defer e.leases.mu.Unlock()
	sess, err := e.sessionLocked(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	b := nodeBatch{e: e, ctx: ctx}
	for id, v := range nodes {
		if old, ok := e.leases.published[id]; ok && bytes.Equal(old, v) {
			continue
		}
		op := clientv3.OpPut(e.nodeKey(id), string(v), clientv3.WithLease(sess.Lease()))
		if err := b.add(op, len(v), func() { e.leases.published[id] = v }); err != nil {
			return unavailable("record nodes", err)
		}
	}
	for id := range e.leases.published {
		if _, ok := nodes[id]; ok {
			continue
		}
		if err := b.add(clientv3.OpDelete(e.nodeKey(id)), 0, func() { delete(e.leases.published, id) }); err != nil {
			return unavailable("remove node records", err)
		}
	}
	if err := b.flush(); err != nil {
		return unavailable("record nodes", err)
	}
	return nil
}

// A replica's nodes change together (a policy change is ACKed by all of
// them within a second), and one request per record made a publish of a
// thousand records take a thousand round trips to etcd. A batch is one
// transaction, kept under etcd's default limit of 128 operations and well
// under its request size limit.
const (
	nodeBatchOps   = 100
	nodeBatchBytes = 512 << 10
)

// nodeBatch gathers node record writes into transactions; each write's
// done runs once its transaction committed.
type nodeBatch struct {
	e     *Etcd
	ctx   context.Context
	ops   []clientv3.Op
	done  []func()
	bytes int
}

func (b *nodeBatch) add(op clientv3.Op, size int, done func()) error {
	if len(b.ops) >= nodeBatchOps || b.bytes+size > nodeBatchBytes {
		if err := b.flush(); err != nil {
			return err
		}
	}
	b.ops, b.done, b.bytes = append(b.ops, op), append(b.done, done), b.bytes+size
	return nil
}

func (b *nodeBatch) flush() error {
	if len(b.ops) == 0 {
		return nil
	}
	if _, err := b.e.cli.Txn(b.ctx).Then(b.ops...).Commit(); err != nil {
		return err
	}
	for _, done := range b.done {
		done()
	}
	b.ops, b.done, b.bytes = nil, nil, 0
	return nil
}

// Nodes reads every replica's node records.
func (e *Etcd) Nodes(ctx context.Context) ([]NodeRecord, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.nodesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable("read node records", err)
	}
	var out []NodeRecord
	for _, kv := range resp.Kvs {
		replica, node, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), e.nodesPrefix()), "/")
		if !ok {
			continue
		}
		r, err1 := url.PathUnescape(replica)
		n, err2 := url.PathUnescape(node)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, NodeRecord{Replica: r, Node: n, Value: kv.Value})
	}
	return out, nil
}

// Lead campaigns for the named election on this replica's lease; while it
// leads, fn runs with a context that ends when the lease is lost or ctx
// ends. A replica that dies stops leading when its lease expires, and the
// next campaigner takes over.
func (e *Etcd) Lead(ctx context.Context, name string, fn func(ctx context.Context)) error {
	for ctx.Err() == nil {
		sess, err := e.session(ctx)
		if err != nil {
			e.log.Warn("cannot campaign: no lease", "election", name, "error", err)
			sleep(ctx, relistDelay)
			continue
		}
		el := concurrency.NewElection(sess, e.cfg.Prefix+"election/"+name)
		if err := el.Campaign(ctx, e.cfg.Replica); err != nil {
			if ctx.Err() == nil {
				e.log.Warn("campaign failed; trying again", "election", name, "error", err)
				sleep(ctx, relistDelay)
			}
			continue
		}
		e.log.Info("leading", "election", name, "replica", e.cfg.Replica)
		lctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-sess.Done():
			case <-lctx.Done():
			}
			cancel()
		}()
		fn(lctx)
		cancel()
		if ctx.Err() != nil {
			// Hand leadership over at once rather than after the lease.
			rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
			_ = el.Resign(rctx)
			rcancel()
			return nil
		}
		e.log.Warn("lost leadership", "election", name)
	}
	return nil
}

// Leader returns the name of the replica that leads the election now.
func (e *Etcd) Leader(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.cfg.Prefix+"election/"+name+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", unavailable("read the leader", err)
	}
	if len(resp.Kvs) == 0 {
		return "", errors.New("no leader")
	}
	return string(resp.Kvs[0].Value), nil
}

func (e *Etcd) valuesPrefix() string { return e.cfg.Prefix + "values/" }

// PutValue stores value under name.
func (e *Etcd) PutValue(ctx context.Context, name string, value []byte) error {
	if len(value) > MaxPolicyBytes {
		return fmt.Errorf("value %s is %d bytes, more than %d", name, len(value), MaxPolicyBytes)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if _, err := e.cli.Put(ctx, e.valuesPrefix()+url.PathEscape(name), string(value)); err != nil {
		return unavailable("store "+name, err)
	}
	return nil
}

// Value reads the value stored under name.
func (e *Etcd) Value(ctx context.Context, name string) ([]byte, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.valuesPrefix()+url.PathEscape(name))
	if err != nil {
		return nil, false, unavailable("read "+name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	return resp.Kvs[0].Value, true, nil
}

// WatchValues reads every value, then watches them, reading again after a
// watch ends as Watch does for the policy.
func (e *Etcd) WatchValues(ctx context.Context, fn func(name string, value []byte)) error {
	deliver := func(key, value []byte) {
		if name, err := url.PathUnescape(strings.TrimPrefix(string(key), e.valuesPrefix())); err == nil {
			fn(name, value)
		}
	}
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, opTimeout)
		resp, err := e.cli.Get(gctx, e.valuesPrefix(), clientv3.WithPrefix())
		cancel()
		if err != nil {
			e.log.Warn("reading shared values failed", "error", err)
			sleep(ctx, relistDelay)
			continue
		}
		for _, kv := range resp.Kvs {
			deliver(kv.Key, kv.Value)
		}
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		for wr := range e.cli.Watch(wctx, e.valuesPrefix(), clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1)) {
			if err := wr.Err(); err != nil {
				e.log.Warn("shared values watch ended; reading again", "error", err)
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypePut {
					deliver(ev.Kv.Key, ev.Kv.Value)
				}
			}
		}
		wcancel()
		sleep(ctx, relistDelay)
	}
	return nil
}
