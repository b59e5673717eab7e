//go:build wasip1

// Command tcp is the directpipe handshake module for tcp mode routes: a
// Proxy-Wasm (ABI 0.2.1) network filter in front of tcp_proxy, built from
// the same auth core as the HTTP module:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o bin/handshake-tcp.wasm ./filter/handshake-tcp
//
// It holds a new connection (tcp_proxy does not connect upstream yet),
// reads the WebSocket upgrade request from the first bytes, and then either
// rewrites it (token stripped, identity headers set) and lets it through,
// or sends the connection to Envoy's deny listener, which answers the raw
// 401 or 403. After that decision every chunk returns at once, and the
// module exports no upstream data callback, so it never sees the server's
// side of the stream.
package main

import (
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/httphead"
	"github.com/directpipe/directpipe/filter/proxywasm"
	"github.com/directpipe/directpipe/filter/tcpcheck"
)

func main() {}

// conn is a connection's state: its plugin, when it opened, and whether
// its handshake has been decided.
type conn struct {
	root    uint32
	opened  time.Time
	decided bool
}

// Package-level state is the Wasm ABI glue, as in the HTTP module: the
// host drives the module by context ids, on one thread per VM.
var (
	rootPolicy = map[uint32]*auth.Policy{}
	conns      = map[uint32]*conn{}
)

const (
	metricAllowed = "directpipe_tcp_handshake_allowed"
	metricDenied  = "directpipe_tcp_handshake_denied_"
	metricTimeout = "directpipe_tcp_handshake_timeout"
	// tcpClusterState is the filter state key tcp_proxy reads to choose
	// its cluster for one connection.
	tcpClusterState = "envoy.tcp_proxy.cluster"
	tickMillis      = 1000
)

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) uint32 {
	proxywasm.ReleasePending()
	data, err := proxywasm.PluginConfiguration()
	if err != nil {
		proxywasm.Log(proxywasm.LogError, err.Error())
		return 0
	}
	cfg, err := auth.ParseConfig(data)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, err.Error())
		return 0
	}
	p := cfg.Single()
	if p == nil {
		// A tcp listener has no routes: a route map would leave the
		// module guessing which policy applies.
		proxywasm.Log(proxywasm.LogError, "auth config: the tcp module takes one policy, not a route map")
		return 0
	}
	if err := proxywasm.SetTickPeriod(tickMillis); err != nil {
		proxywasm.Log(proxywasm.LogError, err.Error())
		return 0
	}
	rootPolicy[rootID] = p
	proxywasm.CounterID(metricAllowed)
	proxywasm.CounterID(metricTimeout)
	for _, r := range auth.Reasons() {
		proxywasm.CounterID(metricDenied + r)
	}
	proxywasm.Log(proxywasm.LogInfo, "configured: "+cfg.Summary())
	return 1
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	if parentID != 0 {
		conns[contextID] = &conn{root: parentID, opened: time.Now()}
	}
}

// proxyOnNewConnection holds the connection: the filters after this one,
// tcp_proxy among them, start only once the handshake is decided, so a
// denied caller never costs an upstream connection.
//
//go:wasmexport proxy_on_new_connection
func proxyOnNewConnection(contextID uint32) uint32 {
	return uint32(proxywasm.ActionPause)
}

//go:wasmexport proxy_on_downstream_data
func proxyOnDownstreamData(contextID, dataSize, endOfStream uint32) uint32 {
	c := conns[contextID]
	if c != nil && c.decided {
		return uint32(proxywasm.ActionContinue) // the pipe: nothing to do
	}
	proxywasm.ReleasePending()
	if c == nil {
		return closeConnection("a connection without a context")
	}
	p := rootPolicy[c.root]
	if p == nil {
		d := auth.NotConfigured()
		return deny(c, d, tcpcheck.DenyRequest(d, auth.DefaultRealm), dataSize)
	}
	// One byte more than a head may hold tells a head that ends exactly
	// at the limit with bytes after it from one that ends the buffer.
	buf, err := proxywasm.GetBufferBytesN(proxywasm.BufferDownstreamData, min(dataSize, httphead.MaxBytes+1))
	if err != nil {
		return closeConnection(err.Error())
	}
	o := tcpcheck.Inspect(p, buf, time.Now())
	switch o.Verdict {
	case tcpcheck.NeedMore:
		if endOfStream != 0 {
			// The client stopped sending before its head ended.
			d := auth.Denial(auth.ReasonBadHandshake)
			return deny(c, d, tcpcheck.DenyRequest(d, p.Realm), dataSize)
		}
		return uint32(proxywasm.ActionPause)
	case tcpcheck.Deny:
		proxywasm.Log(proxywasm.LogDebug, "policy "+p.Name+" denied a tcp handshake: "+o.Decision.Reason)
		return deny(c, o.Decision, o.Replacement, dataSize)
	}
	// The token is in the bytes being replaced: if the host refuses the
	// rewrite, the connection must not go on.
	if err := proxywasm.SetBufferBytes(proxywasm.BufferDownstreamData, 0, uint32(o.HeadLen), o.Replacement); err != nil {
		return closeConnection(err.Error())
	}
	c.decided = true
	proxywasm.Count(metricAllowed)
	return uint32(proxywasm.ActionContinue)
}

// deny swaps every byte received for the request the deny listener
// answers, and points tcp_proxy at that listener.
func deny(c *conn, d auth.Decision, request []byte, dataSize uint32) uint32 {
	if err := proxywasm.SetEnvoyFilterState(tcpClusterState, tcpcheck.DenyCluster); err != nil {
		// Without the deny route the request would go to the back end:
		// close instead, without an answer.
		return closeConnection("cannot route the denial: " + err.Error())
	}
	if err := proxywasm.SetBufferBytes(proxywasm.BufferDownstreamData, 0, dataSize, request); err != nil {
		return closeConnection(err.Error())
	}
	c.decided = true
	proxywasm.Count(metricDenied + d.Reason)
	return uint32(proxywasm.ActionContinue)
}

// closeConnection ends a connection that cannot be decided safely.
func closeConnection(why string) uint32 {
	proxywasm.Log(proxywasm.LogError, "closing a tcp handshake: "+why)
	proxywasm.Count(metricDenied + auth.ReasonInternal)
	if err := proxywasm.CloseStream(proxywasm.StreamDownstream); err != nil {
		proxywasm.Log(proxywasm.LogError, err.Error())
	}
	return uint32(proxywasm.ActionPause)
}

// proxyOnTick closes connections of this plugin that have not finished
// their upgrade request in time: until then they hold no upstream, but
// they must not be held forever.
//
//go:wasmexport proxy_on_tick
func proxyOnTick(rootID uint32) {
	now := time.Now()
	for id, c := range conns {
		if c.root != rootID || c.decided || now.Sub(c.opened) < tcpcheck.HeadTimeout {
			continue
		}
		c.decided = true
		proxywasm.Count(metricTimeout)
		if err := proxywasm.SetEffectiveContext(id); err != nil {
			continue // the connection is already gone
		}
		if err := proxywasm.CloseStream(proxywasm.StreamDownstream); err != nil {
			proxywasm.Log(proxywasm.LogWarn, "closing a slow handshake: "+err.Error())
		}
	}
	proxywasm.SetEffectiveContext(rootID)
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {
	delete(conns, contextID)
	delete(rootPolicy, contextID)
}
