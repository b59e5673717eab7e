package testkit

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/directpipe/directpipe/controlplane/certs"
)

// SimFleetOptions describe a fleet of simulated nodes: ADS clients that
// accept everything, each on a connection of its own, as many Envoys
// would be.
type SimFleetOptions struct {
	// Prefix names the nodes: prefix-0000, prefix-0001, ...
	Prefix string
	Nodes  int
	// Addrs are the control-plane replicas. Node i first connects to
	// Addrs[i%len(Addrs)]; when its stream ends it reconnects, after a
	// back-off, to another one.
	Addrs []string
	// CA, when set, issues every node a client certificate for its id and
	// is the root the nodes trust: mutual TLS. Nil: plaintext.
	CA *certs.Authority
	// Subs is what every node subscribes to.
	Subs Subscription
	// Backoff is the first reconnect delay (the wait is drawn at random
	// up to it, and the bound doubles with each failed try up to
	// MaxBackoff); zero means 500 ms and 30 s, as Envoy's xDS
	// retries (a random wait below a bound that doubles).
	Backoff, MaxBackoff time.Duration
}

// SimFleet is a running fleet of simulated nodes.
type SimFleet struct {
	nodes  []*simNode
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// simNode is one simulated Envoy's view of its xDS stream.
type simNode struct {
	id  string
	tls *tls.Config

	mu sync.Mutex
	// acks is the last version ACKed of each type, and when.
	acks map[string]ackAt
	// server is the replica of the current stream, "" between streams.
	server string
	// syncedAt is when the current stream had every type ACKed.
	syncedAt time.Time
	// refused counts streams refused over a replica's rate.
	refused int
	// lastErr is why the last stream ended or was refused.
	lastErr error
}

type ackAt struct {
	version string
	at      time.Time
}

// StartSimFleet connects every node and returns once each has ACKed every
// type once; the fleet runs until ctx ends or Stop.
func StartSimFleet(ctx context.Context, opts SimFleetOptions) (*SimFleet, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("simulated fleet: no replica address")
	}
	if opts.Backoff <= 0 {
		opts.Backoff, opts.MaxBackoff = 500*time.Millisecond, 30*time.Second
	}
	var pool *x509.CertPool
	if opts.CA != nil {
		pool = x509.NewCertPool()
		pool.AddCert(opts.CA.Cert)
	}
	ctx, cancel := context.WithCancel(ctx)
	f := &SimFleet{cancel: cancel}
	for i := range opts.Nodes {
		n := &simNode{id: fmt.Sprintf("%s-%04d", opts.Prefix, i), acks: map[string]ackAt{}}
		if opts.CA != nil {
			cfg, err := nodeTLS(opts.CA, pool, n.id)
			if err != nil {
				cancel()
				return nil, err
			}
			n.tls = cfg
		}
		f.nodes = append(f.nodes, n)
	}
	for i, n := range f.nodes {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			n.run(ctx, opts, i%len(opts.Addrs))
		}()
	}
	err := f.wait(ctx, func(n *simNode) bool { return n.server != "" })
	if err != nil {
		f.Stop()
		return nil, fmt.Errorf("simulated fleet: not every node synced: %w", err)
	}
	return f, nil
}

// nodeTLS issues node a client certificate, as `dpctl certs` would.
func nodeTLS(ca *certs.Authority, pool *x509.CertPool, node string) (*tls.Config, error) {
	req, err := certs.NodeRequest("", node, time.Hour)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.Issue(req)
	if err != nil {
		return nil, fmt.Errorf("certificate for %s: %w", node, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{RootCAs: pool, ServerName: certs.ServerName, Certificates: []tls.Certificate{pair}}, nil
}

// run keeps one stream open, as an Envoy does: when the stream ends or is
// refused it waits a jittered, growing delay and tries again, on another
// replica unless this one only refused it over its rate.
func (n *simNode) run(ctx context.Context, opts SimFleetOptions, at int) {
	bound := opts.Backoff
	for ctx.Err() == nil {
		addr := opts.Addrs[at]
		err := n.stream(ctx, addr, opts.Subs, func() { bound = opts.Backoff })
		if ctx.Err() != nil {
			return
		}
		refused := status.Code(err) == codes.ResourceExhausted
		n.mu.Lock()
		n.lastErr = err
		if refused {
			n.refused++
		}
		n.mu.Unlock()
		// Refused over its rate, the replica is alive: try it again.
		if !refused && len(opts.Addrs) > 1 {
			at = (at + 1 + rand.IntN(len(opts.Addrs)-1)) % len(opts.Addrs)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(rand.Int64N(int64(bound)))):
		}
		bound = min(2*bound, opts.MaxBackoff)
	}
}

// stream syncs with the replica at addr and follows it until the stream
// ends; synced runs once every type is ACKed.
func (n *simNode) stream(ctx context.Context, addr string, subs Subscription, synced func()) error {
	c, err := DialXDS(addr, n.tls)
	if err != nil {
		return err
	}
	defer c.Close()
	c.OnAck = n.acked
	s, err := c.Sync(ctx, n.id, subs)
	defer s.Close()
	if err != nil {
		return err
	}
	n.mu.Lock()
	n.server, n.syncedAt = addr, time.Now()
	n.mu.Unlock()
	synced()
	err = s.Follow()
	n.mu.Lock()
	n.server = ""
	n.mu.Unlock()
	return err
}

func (n *simNode) acked(typeURL, version string) {
	now := time.Now()
	n.mu.Lock()
	n.acks[typeURL] = ackAt{version, now}
	n.mu.Unlock()
}

// Stop disconnects every node and waits until their goroutines ended.
func (f *SimFleet) Stop() {
	f.cancel()
	f.wg.Wait()
}

// wait polls until done holds for every node (under its lock).
func (f *SimFleet) wait(ctx context.Context, done func(*simNode) bool) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		pending := 0
		var example string
		for _, n := range f.nodes {
			n.mu.Lock()
			if !done(n) {
				pending++
				if example == "" && n.lastErr != nil {
					example = fmt.Sprintf(" (%s: %v)", n.id, n.lastErr)
				}
			}
			n.mu.Unlock()
		}
		if pending == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d nodes pending%s: %w", pending, len(f.nodes), example, ctx.Err())
		case <-tick.C:
		}
	}
}

// WaitAcked waits until every node ACKed versions (by type URL) and
// returns, for each node, the time from since to its last ACK of them,
// sorted.
func (f *SimFleet) WaitAcked(ctx context.Context, versions map[string]string, since time.Time) ([]time.Duration, error) {
	err := f.wait(ctx, func(n *simNode) bool {
		for typ, v := range versions {
			if n.acks[typ].version != v {
				return false
			}
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]time.Duration, 0, len(f.nodes))
	for _, n := range f.nodes {
		var last time.Duration
		n.mu.Lock()
		for typ := range versions {
			last = max(last, n.acks[typ].at.Sub(since))
		}
		n.mu.Unlock()
		out = append(out, last)
	}
	slices.Sort(out)
	return out, nil
}

// On lists the nodes whose stream is with the replica at addr.
func (f *SimFleet) On(addr string) []string {
	var ids []string
	for _, n := range f.nodes {
		n.mu.Lock()
		if n.server == addr {
			ids = append(ids, n.id)
		}
		n.mu.Unlock()
	}
	return ids
}

// WaitMoved waits until every node in ids synced a stream with a replica
// other than from, after since, and returns for each the time from since
// to that sync, sorted.
func (f *SimFleet) WaitMoved(ctx context.Context, ids []string, from string, since time.Time) ([]time.Duration, error) {
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	err := f.wait(ctx, func(n *simNode) bool {
		return !want[n.id] || (n.server != "" && n.server != from && n.syncedAt.After(since))
	})
	if err != nil {
		return nil, err
	}
	var out []time.Duration
	for _, n := range f.nodes {
		if want[n.id] {
			n.mu.Lock()
			out = append(out, n.syncedAt.Sub(since))
			n.mu.Unlock()
		}
	}
	slices.Sort(out)
	return out, nil
}

// Refused is how many streams the replicas refused over their rate, all
// nodes together.
func (f *SimFleet) Refused() int {
	total := 0
	for _, n := range f.nodes {
		n.mu.Lock()
		total += n.refused
		n.mu.Unlock()
	}
	return total
}
