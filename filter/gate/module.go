package gate

import (
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// ModuleHost is the host of the one module: HTTP streams and tcp
// connections, and the root id of the plugin being configured.
type ModuleHost interface {
	HTTPHost
	TCPHost
	// RootID returns the root id of the plugin whose callback is running.
	RootID() (string, error)
	// AddCount adds n to a counter.
	AddCount(name string, n uint64)
}

// Module is the whole module's state: each root context is an HTTP or a
// tcp plugin, and each stream or connection belongs to one of them. Envoy
// runs one instance per worker for both filters when their VM
// configuration and code are the same.
type Module struct {
	HTTP *HTTP
	TCP  *TCP
	tcp  map[uint32]bool // by root or child context: a tcp one
	// httpCalls and tcpCalls count entries since they were last added to
	// their counters, which happens once per context, at its deletion, so
	// that counting costs no host call per frame.
	httpCalls, tcpCalls uint64
}

// entered counts a callback for context id.
func (m *Module) entered(id uint32) {
	if m.tcp[id] {
		m.tcpCalls++
	} else {
		m.httpCalls++
	}
}

// NewModule returns a module with no plugin configured.
func NewModule() *Module {
	return &Module{HTTP: NewHTTP(), TCP: NewTCP(), tcp: map[uint32]bool{}}
}

// Configure configures a root context as the plugin its root id names.
func (m *Module) Configure(h ModuleHost, rootID uint32) bool {
	id, err := h.RootID()
	if err != nil {
		m.entered(rootID)
		h.Log(LevelError, "cannot read the plugin's root id: "+err.Error())
		return false
	}
	h.DefineCounter(contract.MetricHTTPCallbacks)
	h.DefineCounter(contract.MetricTCPCallbacks)
	h.DefineCounter(contract.MetricTokenCacheHits)
	h.DefineCounter(contract.MetricTokenCacheMisses)
	h.DefineCounter(contract.MetricHostVerified)
	h.DefineCounter(contract.MetricHostVerifyUnavailable)
	// Configuring is rare: its callbacks are added at once, so that a
	// stream's deletion adds only its own.
	defer m.flush(h)
	if strings.HasPrefix(id, contract.TCPRootIDPrefix) {
		m.tcp[rootID] = true
		m.entered(rootID)
		return m.TCP.Configure(h, rootID, id)
	}
	delete(m.tcp, rootID)
	m.entered(rootID)
	if !m.HTTP.Configure(h, rootID) {
		return false
	}
	// The tick keeps the HTTP streams' quota counts alive (see
	// AliveTimeout); without it they would be dropped as a failed VM's.
	if err := h.SetTickPeriod(TickMillis); err != nil {
		h.Log(LevelError, "quota liveness: "+err.Error())
	}
	return true
}

// ContextCreate records a stream or connection under its plugin.
func (m *Module) ContextCreate(id, parentID uint32, now time.Time) {
	if parentID == 0 {
		m.entered(id) // a root: its kind comes with its configuration
		return
	}
	if m.tcp[parentID] {
		m.tcp[id] = true
		m.entered(id)
		m.TCP.ContextCreate(id, parentID, now)
		return
	}
	m.entered(id)
	m.HTTP.ContextCreate(id, parentID)
}

// RequestHeaders serves an HTTP stream's request headers.
func (m *Module) RequestHeaders(h HTTPHost, id uint32, now time.Time) Action {
	m.entered(id)
	return m.HTTP.RequestHeaders(h, id, now)
}

// NewConnection serves a new tcp connection.
func (m *Module) NewConnection(h TCPHost, id uint32) Action {
	m.entered(id)
	return m.TCP.NewConnection(h, id)
}

// DownstreamData serves a tcp connection's data from its client.
func (m *Module) DownstreamData(h TCPHost, id, size uint32, end bool, now func() time.Time) Action {
	m.entered(id)
	return m.TCP.DownstreamData(h, id, size, end, now)
}

// Tick serves a plugin's timer: a tcp plugin's closes late handshakes,
// and every plugin's says the quota counts of this VM are alive and
// sweeps a stretch of the streams table for failed VMs' counts. An HTTP
// plugin's tick is not counted as a callback: that counter shows what
// streams cost.
func (m *Module) Tick(h TCPHost, rootID uint32, now time.Time) {
	if m.tcp[rootID] {
		m.entered(rootID)
		m.TCP.Tick(h, rootID, now)
	}
	m.HTTP.quota.Refresh(h, now)
	m.TCP.quota.Refresh(h, now)
	sweepDead(h, now)
}

// Delete forgets a context and adds the callbacks counted so far.
func (m *Module) Delete(h ModuleHost, id uint32) {
	m.entered(id)
	if m.tcp[id] {
		m.TCP.Delete(h, id)
	} else {
		m.HTTP.Delete(h, id)
	}
	delete(m.tcp, id)
	m.flush(h)
}

// flush adds the callbacks counted since the last flush to their counters.
func (m *Module) flush(h ModuleHost) {
	h.AddCount(contract.MetricHTTPCallbacks, m.httpCalls)
	h.AddCount(contract.MetricTCPCallbacks, m.tcpCalls)
	m.httpCalls, m.tcpCalls = 0, 0
}

// countCache counts a token cache hit or miss of a decision.
func countCache(h Host, d auth.Decision) {
	switch d.Cache {
	case auth.CacheHit:
		h.Count(contract.MetricTokenCacheHits)
	case auth.CacheMiss:
		h.Count(contract.MetricTokenCacheMisses)
	}
}
