package gate

import (
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/httphead"
	"github.com/directpipe/directpipe/filter/tcpcheck"
)

const (
	// tcpClusterState is the filter state key tcp_proxy reads to choose
	// its cluster for one connection.
	tcpClusterState = "envoy.tcp_proxy.cluster"
)

// conn is a connection's state: its plugin, when it opened, whether its
// handshake has been decided, and its place in the pending list while it
// has not.
type conn struct {
	id         uint32
	root       uint32
	opened     time.Time
	decided    bool
	prev, next *conn
	// head holds what the client has sent while undecided, read from the
	// host a piece at a time, and scan what has been read of it: a head
	// trickled a byte per packet costs the module about what it costs
	// sent at once.
	head []byte
	scan httphead.Scanner
}

// TCP decides WebSocket handshakes on raw connections in front of
// tcp_proxy: it holds a new connection, reads the upgrade request from its
// first bytes, and then either rewrites it and lets it through or sends
// the connection to Envoy's deny listener. After that decision every
// chunk passes untouched.
type TCP struct {
	policies map[uint32]*auth.Policy // by root context
	// plugins names each root context's plugin (its root id), and latest
	// the root context each plugin was configured on last. A config push
	// starts a new root context, but a connection stays with the one it
	// was accepted under; its handshake is decided by its plugin's
	// latest policy, so a key removed while a client was still sending
	// its head is refused, and a key added lets it in.
	plugins map[uint32]string
	latest  map[string]uint32
	conns   map[uint32]*conn
	// pending holds the undecided connections of every plugin of the
	// worker, oldest first: the tick and the shedding of a flood take
	// from its front without looking at decided connections.
	pending queue
	quota   *Quota
}

// NewTCP returns a tcp gate with no plugin configured.
func NewTCP() *TCP {
	return &TCP{policies: map[uint32]*auth.Policy{}, plugins: map[uint32]string{}, latest: map[string]uint32{}, conns: map[uint32]*conn{}, quota: NewQuota()}
}

// Configure parses the configuration of plugin (its root id) on root
// context rootID, which must hold exactly one policy, and starts its
// tick.
func (g *TCP) Configure(h TCPHost, rootID uint32, plugin string) bool {
	cfg, ok := parseConfig(h)
	if !ok {
		return false
	}
	p := cfg.Single()
	if p == nil {
		// A tcp listener has no routes: a route map would leave the
		// module guessing which policy applies.
		h.Log(LevelError, "auth config: the tcp module takes one policy, not a route map")
		return false
	}
	if err := h.SetTickPeriod(TickMillis); err != nil {
		h.Log(LevelError, err.Error())
		return false
	}
	g.policies[rootID] = p
	g.plugins[rootID] = plugin
	g.latest[plugin] = rootID
	h.DefineCounter(contract.MetricTCPAllowed)
	h.DefineCounter(contract.MetricTCPHeadTimeout)
	h.DefineCounter(contract.MetricTCPShed)
	for _, r := range contract.Reasons() {
		h.DefineCounter(contract.MetricTCPDeniedPrefix + r)
	}
	h.Log(LevelInfo, "configured: "+cfg.Summary())
	return true
}

// ContextCreate records a new connection of a plugin.
func (g *TCP) ContextCreate(id, parentID uint32, now time.Time) {
	if parentID == 0 {
		return
	}
	if old := g.conns[id]; old != nil {
		g.pending.remove(old) // an id the host reused without a delete
	}
	c := &conn{id: id, root: parentID, opened: now}
	g.conns[id] = c
	g.pending.push(c)
}

// NewConnection holds the connection: the filters after this one,
// tcp_proxy among them, start only once the handshake is decided, so a
// denied caller never costs an upstream connection. Past MaxPending
// undecided handshakes, the oldest is closed to make room.
func (g *TCP) NewConnection(h TCPHost, id uint32) Action {
	if g.pending.n <= MaxPending {
		return Pause
	}
	oldest := g.pending.front()
	if oldest == nil || oldest.id == id {
		return Pause
	}
	g.decide(oldest)
	h.Count(contract.MetricTCPShed)
	closeOther(h, oldest.id)
	if err := h.SetEffectiveContext(id); err != nil {
		h.Log(LevelWarn, "back to the new connection: "+err.Error())
	}
	return Pause
}

// decide marks a connection decided: it leaves the pending list.
func (g *TCP) decide(c *conn) {
	c.decided = true
	c.head, c.scan = nil, httphead.Scanner{}
	g.pending.remove(c)
}

// DownstreamData looks at what connection id has sent so far (size bytes,
// end of stream when the client has closed its side). It reads the clock
// only before the decision: after it, a chunk costs no host call.
func (g *TCP) DownstreamData(h TCPHost, id, size uint32, end bool, now func() time.Time) Action {
	c := g.conns[id]
	if c == nil {
		return closeConnection(h, "a connection without a context")
	}
	if c.decided {
		return Continue // the pipe: nothing to do
	}
	p := g.policy(c)
	if p == nil {
		return g.deny(h, c, auth.NotConfigured(), contract.DefaultRealm, size)
	}
	if !clientAllowed(h, p.ClientList()) {
		// The client waits for an HTTP answer: it gets the deny
		// listener's 403, whatever its first bytes hold, and no byte of
		// its request goes further.
		return g.deny(h, c, auth.Denial(contract.ReasonClientAddress), p.Realm, size)
	}
	// One byte more than a head may hold tells a head that ends exactly
	// at the limit with bytes after it from one that ends the buffer.
	want := int(min(size, contract.MaxHeadBytes+1))
	if want < len(c.head) {
		// Envoy keeps a held connection's bytes; if it ever gives fewer,
		// read them all again.
		c.head, c.scan = c.head[:0], httphead.Scanner{}
	}
	if want > len(c.head) {
		more, err := h.DownstreamData(uint32(len(c.head)), uint32(want-len(c.head)))
		if err != nil {
			return closeConnection(h, err.Error())
		}
		c.head = append(c.head, more...)
	}
	t := now()
	o := tcpcheck.InspectScanned(p, &c.scan, c.head, t)
	countCache(h, o.Decision)
	switch o.Verdict {
	case tcpcheck.NeedMore:
		if end {
			// The client stopped sending before its head ended.
			return g.deny(h, c, auth.Denial(contract.ReasonBadHandshake), p.Realm, size)
		}
		return Pause
	case tcpcheck.Deny:
		h.Log(LevelDebug, "policy "+p.Name+" denied a tcp handshake: "+o.Decision.Reason)
		return g.deny(h, c, o.Decision, p.Realm, size)
	}
	if reason := g.quota.Admit(h, id, p, o.Decision.Identity, t); reason != "" {
		return g.deny(h, c, auth.Denial(reason), p.Realm, size)
	}
	// The token is in the bytes being replaced: if the host refuses the
	// rewrite, the connection must not go on (and gives back its stream
	// when Envoy deletes it).
	if err := h.ReplaceDownstreamData(uint32(o.HeadLen), o.Replacement); err != nil {
		return closeConnection(h, err.Error())
	}
	g.decide(c)
	h.Count(contract.MetricTCPAllowed)
	return Continue
}

// policy is the policy that decides c's handshake now: its plugin's
// latest, or the one it was accepted under while that is all there is.
func (g *TCP) policy(c *conn) *auth.Policy {
	if p := g.policies[g.latest[g.plugins[c.root]]]; p != nil {
		return p
	}
	return g.policies[c.root]
}

// deny answers a denied handshake. A host that can write to its client
// (TCPResponder) answers it there and closes; otherwise every byte
// received is swapped for the request the deny listener answers, and
// tcp_proxy is pointed at that listener.
func (g *TCP) deny(h TCPHost, c *conn, d auth.Decision, realm string, size uint32) Action {
	if r, ok := h.(TCPResponder); ok {
		if err := r.Respond(tcpcheck.DenyResponse(d, realm)); err != nil {
			return closeConnection(h, "answering the denial: "+err.Error())
		}
		g.decide(c)
		h.Count(contract.MetricTCPDeniedPrefix + d.Reason)
		return Pause
	}
	if err := h.SetConnectionFilterState(tcpClusterState, contract.DenyCluster); err != nil {
		// Without the deny route the request would go to the back end:
		// close instead, without an answer.
		return closeConnection(h, "cannot route the denial: "+err.Error())
	}
	if err := h.ReplaceDownstreamData(size, tcpcheck.DenyRequest(d, realm)); err != nil {
		return closeConnection(h, err.Error())
	}
	g.decide(c)
	h.Count(contract.MetricTCPDeniedPrefix + d.Reason)
	return Continue
}

// Refresh says the quota counts of this gate's connections are alive.
func (g *TCP) Refresh(h Host, now time.Time) { g.quota.Refresh(h, now) }

// closeConnection ends a connection that cannot be decided safely.
func closeConnection(h TCPHost, why string) Action {
	h.Log(LevelError, "closing a tcp handshake: "+why)
	h.Count(contract.MetricTCPDeniedPrefix + contract.ReasonInternal)
	if err := h.CloseDownstream(); err != nil {
		h.Log(LevelError, err.Error())
	}
	return Pause
}

// Tick closes connections that have not finished their upgrade request
// in time: until then they hold no upstream, but they must not be held
// forever. Any tcp plugin's tick serves the worker's whole pending list,
// so connections outlive neither their plugin nor a plugin update; at
// most ClosesPerCall per tick, the oldest first.
func (g *TCP) Tick(h TCPHost, rootID uint32, now time.Time) {
	// Collect first: each close re-enters Delete, which edits the list.
	late := make([]*conn, 0, min(g.pending.n, ClosesPerCall))
	for c := g.pending.front(); c != nil && len(late) < ClosesPerCall && now.Sub(c.opened) >= tcpcheck.HeadTimeout; c = c.next {
		late = append(late, c)
	}
	for _, c := range late {
		g.decide(c)
		h.Count(contract.MetricTCPHeadTimeout)
		closeOther(h, c.id)
	}
	if len(late) > 0 {
		h.SetEffectiveContext(rootID)
	}
}

// closeOther closes connection id from a callback of another context.
func closeOther(h TCPHost, id uint32) {
	if err := h.SetEffectiveContext(id); err != nil {
		return // the connection is already gone
	}
	if err := h.CloseDownstream(); err != nil {
		h.Log(LevelWarn, "closing a slow handshake: "+err.Error())
	}
}

// Delete forgets a connection or a plugin; a connection gives back what
// it held of its identity's quota.
func (g *TCP) Delete(h Host, id uint32) {
	g.quota.Release(h, id)
	if c := g.conns[id]; c != nil {
		g.pending.remove(c)
		delete(g.conns, id)
	}
	delete(g.policies, id)
	if plugin, ok := g.plugins[id]; ok {
		delete(g.plugins, id)
		if g.latest[plugin] == id {
			delete(g.latest, plugin)
		}
	}
}

// queue is a list of connections in the order they opened; a connection
// leaves it in constant time, from anywhere.
type queue struct {
	head, tail *conn
	n          int
}

func (q *queue) front() *conn { return q.head }

func (q *queue) push(c *conn) {
	c.prev, c.next = q.tail, nil
	if q.tail != nil {
		q.tail.next = c
	} else {
		q.head = c
	}
	q.tail = c
	q.n++
}

// remove takes c out of the list; a connection not in it is left alone.
func (q *queue) remove(c *conn) {
	if c.prev == nil && q.head != c {
		return
	}
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		q.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		q.tail = c.prev
	}
	c.prev, c.next = nil, nil
	q.n--
}
