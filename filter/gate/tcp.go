package gate

import (
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/tcpcheck"
)

const (
	// tcpClusterState is the filter state key tcp_proxy reads to choose
	// its cluster for one connection.
	tcpClusterState = "envoy.tcp_proxy.cluster"
	// TickMillis is how often the host ticks a tcp plugin, which bounds
	// how late a slow handshake is closed.
	TickMillis = 1000
)

// conn is a connection's state: its plugin, when it opened, and whether
// its handshake has been decided.
type conn struct {
	root    uint32
	opened  time.Time
	decided bool
}

// TCP decides WebSocket handshakes on raw connections in front of
// tcp_proxy: it holds a new connection, reads the upgrade request from its
// first bytes, and then either rewrites it and lets it through or sends
// the connection to Envoy's deny listener. After that decision every
// chunk passes untouched.
type TCP struct {
	policies map[uint32]*auth.Policy // by root context
	conns    map[uint32]*conn
}

// NewTCP returns a tcp gate with no plugin configured.
func NewTCP() *TCP {
	return &TCP{policies: map[uint32]*auth.Policy{}, conns: map[uint32]*conn{}}
}

// Configure parses a plugin's configuration, which must hold exactly one
// policy, and starts its tick.
func (g *TCP) Configure(h TCPHost, rootID uint32) bool {
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
	h.DefineCounter(contract.MetricTCPAllowed)
	h.DefineCounter(contract.MetricTCPHeadTimeout)
	for _, r := range contract.Reasons() {
		h.DefineCounter(contract.MetricTCPDeniedPrefix + r)
	}
	h.Log(LevelInfo, "configured: "+cfg.Summary())
	return true
}

// ContextCreate records a new connection of a plugin.
func (g *TCP) ContextCreate(id, parentID uint32, now time.Time) {
	if parentID != 0 {
		g.conns[id] = &conn{root: parentID, opened: now}
	}
}

// NewConnection holds the connection: the filters after this one,
// tcp_proxy among them, start only once the handshake is decided, so a
// denied caller never costs an upstream connection.
func (g *TCP) NewConnection(id uint32) Action { return Pause }

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
	p := g.policies[c.root]
	if p == nil {
		d := auth.NotConfigured()
		return deny(h, c, d, tcpcheck.DenyRequest(d, contract.DefaultRealm), size)
	}
	// One byte more than a head may hold tells a head that ends exactly
	// at the limit with bytes after it from one that ends the buffer.
	buf, err := h.DownstreamData(min(size, contract.MaxHeadBytes+1))
	if err != nil {
		return closeConnection(h, err.Error())
	}
	o := tcpcheck.Inspect(p, buf, now())
	countCache(h, o.Decision)
	switch o.Verdict {
	case tcpcheck.NeedMore:
		if end {
			// The client stopped sending before its head ended.
			d := auth.Denial(contract.ReasonBadHandshake)
			return deny(h, c, d, tcpcheck.DenyRequest(d, p.Realm), size)
		}
		return Pause
	case tcpcheck.Deny:
		h.Log(LevelDebug, "policy "+p.Name+" denied a tcp handshake: "+o.Decision.Reason)
		return deny(h, c, o.Decision, o.Replacement, size)
	}
	// The token is in the bytes being replaced: if the host refuses the
	// rewrite, the connection must not go on.
	if err := h.ReplaceDownstreamData(uint32(o.HeadLen), o.Replacement); err != nil {
		return closeConnection(h, err.Error())
	}
	c.decided = true
	h.Count(contract.MetricTCPAllowed)
	return Continue
}

// deny swaps every byte received for the request the deny listener
// answers, and points tcp_proxy at that listener.
func deny(h TCPHost, c *conn, d auth.Decision, request []byte, size uint32) Action {
	if err := h.SetConnectionFilterState(tcpClusterState, contract.DenyCluster); err != nil {
		// Without the deny route the request would go to the back end:
		// close instead, without an answer.
		return closeConnection(h, "cannot route the denial: "+err.Error())
	}
	if err := h.ReplaceDownstreamData(size, request); err != nil {
		return closeConnection(h, err.Error())
	}
	c.decided = true
	h.Count(contract.MetricTCPDeniedPrefix + d.Reason)
	return Continue
}

// closeConnection ends a connection that cannot be decided safely.
func closeConnection(h TCPHost, why string) Action {
	h.Log(LevelError, "closing a tcp handshake: "+why)
	h.Count(contract.MetricTCPDeniedPrefix + contract.ReasonInternal)
	if err := h.CloseDownstream(); err != nil {
		h.Log(LevelError, err.Error())
	}
	return Pause
}

// Tick closes connections of plugin rootID that have not finished their
// upgrade request in time: until then they hold no upstream, but they
// must not be held forever.
func (g *TCP) Tick(h TCPHost, rootID uint32, now time.Time) {
	for id, c := range g.conns {
		if c.root != rootID || c.decided || now.Sub(c.opened) < tcpcheck.HeadTimeout {
			continue
		}
		c.decided = true
		h.Count(contract.MetricTCPHeadTimeout)
		if err := h.SetEffectiveContext(id); err != nil {
			continue // the connection is already gone
		}
		if err := h.CloseDownstream(); err != nil {
			h.Log(LevelWarn, "closing a slow handshake: "+err.Error())
		}
	}
	h.SetEffectiveContext(rootID)
}

// Delete forgets a connection or a plugin.
func (g *TCP) Delete(id uint32) {
	delete(g.conns, id)
	delete(g.policies, id)
}
