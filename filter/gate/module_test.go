package gate

import (
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

// TestModuleDispatch: one module instance serves an HTTP plugin and a tcp
// plugin side by side; each context goes to its plugin's kind, whatever
// order the host creates them in.
func TestModuleDispatch(t *testing.T) {
	const (
		httpRoot = 1
		tcpRoot  = 2
		stream   = 3
		conn     = 4
	)
	m := NewModule()
	hh := newFakeHost(routedConfig(t))
	hh.rootID = "directpipe.handshake"
	th := newFakeHost(mustJSON(t, policyDoc()))
	th.rootID = contract.TCPRootIDPrefix + "voice-raw"
	m.ContextCreate(httpRoot, 0, now)
	m.ContextCreate(tcpRoot, 0, now)
	if !m.Configure(hh, httpRoot) || !m.Configure(th, tcpRoot) {
		t.Fatalf("configure refused: %q %q", hh.logs, th.logs)
	}
	// Both tick: the tcp plugin closes late handshakes, and each keeps
	// its quota counts alive.
	if hh.tickMillis != TickMillis || th.tickMillis != TickMillis {
		t.Fatalf("tick periods: HTTP %d, tcp %d, want %d", hh.tickMillis, th.tickMillis, TickMillis)
	}
	m.ContextCreate(conn, tcpRoot, now)
	m.ContextCreate(stream, httpRoot, now)
	if _, ok := m.TCP.conns[stream]; ok {
		t.Fatal("an HTTP stream was recorded as a tcp connection: the tick would close it")
	}
	if m.HTTP.streams[stream] != httpRoot || m.TCP.conns[conn] == nil {
		t.Fatalf("contexts not recorded: %v %v", m.HTTP.streams, m.TCP.conns)
	}

	h := newFakeHost("")
	h.route, h.routeFound = "voice", true
	h.headers["authorization"] = "Bearer " + token(t, goodClaims())
	if a := m.RequestHeaders(h, stream, now); a != Continue {
		t.Fatalf("HTTP stream: %d %+v", a, h.local)
	}
	h = newFakeHost("")
	h.data = []byte(upgrade("/v1/a", "Authorization: Bearer "+token(t, goodClaims())))
	if m.NewConnection(h, conn) != Pause || m.DownstreamData(h, conn, uint32(len(h.data)), false, clock) != Continue {
		t.Fatalf("tcp connection not allowed: %q", h.logs)
	}
	for i := 0; i < 100; i++ { // frames through the pipe
		m.DownstreamData(h, conn, 10, false, clock)
	}

	// Deleting each context forgets it from its kind only, and adds the
	// callbacks counted so far. HTTP: both roots' creates (a root's kind
	// is not known before its configuration), its root's configure, the
	// stream's create and request headers, two deletes. tcp: its root's
	// configure, the connection's create, a new connection, 101 data, two
	// deletes.
	h = newFakeHost("")
	h.counts[contract.MetricHTTPCallbacks] = hh.counts[contract.MetricHTTPCallbacks] + th.counts[contract.MetricHTTPCallbacks]
	h.counts[contract.MetricTCPCallbacks] = hh.counts[contract.MetricTCPCallbacks] + th.counts[contract.MetricTCPCallbacks]
	for _, id := range []uint32{stream, conn, httpRoot, tcpRoot} {
		m.Delete(h, id)
	}
	if len(m.HTTP.streams)+len(m.HTTP.configs)+len(m.TCP.conns)+len(m.TCP.policies)+len(m.tcp) != 0 {
		t.Fatalf("state kept: %+v %+v %v", m.HTTP, m.TCP, m.tcp)
	}
	if got := h.counts[contract.MetricHTTPCallbacks]; got != 2+1+2+2 {
		t.Errorf("%s = %d", contract.MetricHTTPCallbacks, got)
	}
	if got := h.counts[contract.MetricTCPCallbacks]; got != 1+1+1+101+2 {
		t.Errorf("%s = %d", contract.MetricTCPCallbacks, got)
	}
}

// TestModuleRootIDUnreadable: a plugin whose kind cannot be told is
// refused rather than guessed.
func TestModuleRootIDUnreadable(t *testing.T) {
	m := NewModule()
	h := newFakeHost(mustJSON(t, policyDoc()))
	if m.Configure(h, rootID) || len(h.logs) == 0 {
		t.Fatalf("configured without a root id: logs %q", h.logs)
	}
}

// TestModuleReconfigureKind: a root id is fixed for a root context, but a
// reused context id after deletion may be the other kind.
func TestModuleReconfigureKind(t *testing.T) {
	m := NewModule()
	th := newFakeHost(mustJSON(t, policyDoc()))
	th.rootID = contract.TCPRootIDPrefix + "r"
	m.Configure(th, rootID)
	m.Delete(th, rootID)
	hh := newFakeHost(routedConfig(t))
	hh.rootID = "directpipe.handshake"
	m.Configure(hh, rootID)
	m.ContextCreate(streamID, rootID, now)
	if m.TCP.conns[streamID] != nil || m.HTTP.streams[streamID] != rootID {
		t.Fatal("a stream of the new HTTP root went to the tcp gate")
	}
}
