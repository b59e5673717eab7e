package gate

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/tcpcheck"
)

// upgrade is a WebSocket upgrade request with extra header lines.
func upgrade(target string, lines ...string) string {
	s := "GET " + target + " HTTP/1.1\r\nHost: voice.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, l := range lines {
		s += l + "\r\n"
	}
	return s + "\r\n"
}

// tcpGate returns a gate with the test policy configured on rootID and one
// connection, streamID, opened at now.
func tcpGate(t *testing.T) *TCP {
	t.Helper()
	g := NewTCP()
	h := newFakeHost(mustJSON(t, policyDoc()))
	if !g.Configure(h, rootID, tcpPlugin) {
		t.Fatalf("configuration refused: %q", h.logs)
	}
	if h.tickMillis != TickMillis {
		t.Fatalf("tick period %d, want %d", h.tickMillis, TickMillis)
	}
	g.ContextCreate(streamID, rootID, now)
	if a := g.NewConnection(h, streamID); a != Pause {
		t.Fatalf("a new connection is not held: %d", a)
	}
	return g
}

func TestTCPConfigure(t *testing.T) {
	tests := []struct {
		name   string
		config string
	}{
		{"route map", routedConfig(t)},
		{"not JSON", "{"},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(tt.config)
			g := NewTCP()
			if g.Configure(h, rootID, tcpPlugin) {
				t.Fatal("configuration accepted")
			}
			if len(g.policies) != 0 || h.tickMillis != 0 || len(h.logs) == 0 {
				t.Fatalf("refused configuration left policies %v, tick %d, logs %q", g.policies, h.tickMillis, h.logs)
			}
		})
	}
}

// TestTCPDownstreamData walks the state machine through each decision,
// one or more chunks at a time: a chunk is what the client has sent so far
// (Envoy's buffer grows while the connection is held).
func TestTCPDownstreamData(t *testing.T) {
	good := token(t, goodClaims())
	allowed := upgrade("/v1/a", "Authorization: Bearer "+good, "X-Directpipe-Tenant: spoofed")
	tests := []struct {
		name    string
		chunks  []string // cumulative data at each callback
		end     bool     // the client closed its side after the last chunk
		prepare func(*fakeHost)

		actions []Action // one per chunk
		verdict string   // "allow", "deny:<reason>", "close" or "" (still held)
	}{
		{"whole head allowed", []string{allowed}, false, nil, []Action{Continue}, "allow"},
		{"partial then whole", []string{allowed[:20], allowed[:100], allowed}, false, nil, []Action{Pause, Pause, Continue}, "allow"},
		{"partial held", []string{allowed[:40]}, false, nil, []Action{Pause}, ""},
		{"client closed mid-head", []string{allowed[:40]}, true, nil, []Action{Continue}, "deny:bad_handshake"},
		{"no token", []string{upgrade("/v1/a")}, false, nil, []Action{Continue}, "deny:missing_token"},
		{"not an upgrade", []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n"}, false, nil, []Action{Continue}, "deny:bad_handshake"},
		{"bytes after the head", []string{allowed + "x"}, false, nil, []Action{Continue}, "deny:bad_handshake"},
		{"not HTTP", []string{"\x16\x03\x01\x00"}, false, nil, []Action{Continue}, "deny:bad_handshake"},
		{"head too large", []string{upgrade("/v1/a", "X-Pad: "+strings.Repeat("a", 40<<10))}, false, nil, []Action{Continue}, "deny:bad_handshake"},
		{"host cannot read", []string{allowed}, false, func(h *fakeHost) { h.errData = errors.New("refused") }, []Action{Pause}, "close"},
		{"host cannot rewrite", []string{allowed}, false, func(h *fakeHost) { h.errReplaceData = errors.New("refused") }, []Action{Pause}, "close"},
		{"host cannot route the denial", []string{upgrade("/v1/a")}, false, func(h *fakeHost) { h.errState = errors.New("refused") }, []Action{Pause}, "close"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tcpGate(t)
			h := newFakeHost("")
			if tt.prepare != nil {
				tt.prepare(h)
			}
			for i, chunk := range tt.chunks {
				h.data = []byte(chunk)
				end := tt.end && i == len(tt.chunks)-1
				if a := g.DownstreamData(h, streamID, uint32(len(chunk)), end, clock); a != tt.actions[i] {
					t.Fatalf("chunk %d: action %d, want %d (logs %q)", i, a, tt.actions[i], h.logs)
				}
			}
			checkVerdict(t, h, tt.verdict, good)
			if tt.verdict == "" || tt.verdict == "close" {
				return // held, or being closed by the host
			}
			// Decided: whatever comes next passes without a host call, the
			// clock's included.
			next := newFakeHost("")
			next.errData = errors.New("the pipe must not read")
			noClock := func() time.Time { t.Fatal("the pipe read the clock"); return now }
			if a := g.DownstreamData(next, streamID, 1<<20, false, noClock); a != Continue || len(next.logs)+len(next.counts) != 0 {
				t.Fatalf("after the decision: action %d, logs %q, counts %v", a, next.logs, next.counts)
			}
		})
	}
}

// checkVerdict asserts what the host was told for a verdict.
func checkVerdict(t *testing.T, h *fakeHost, verdict, token string) {
	t.Helper()
	data := string(h.data)
	if token == "" {
		token = "\x00no token" // matches nothing
	}
	switch {
	case verdict == "":
		if len(h.counts) != 0 || len(h.closed) != 0 {
			t.Fatalf("a held connection was decided: counts %v, closed %v", h.counts, h.closed)
		}
	case verdict == "allow":
		if h.counts[contract.MetricTCPAllowed] != 1 || len(h.filterState) != 0 {
			t.Fatalf("counts %v, filter state %v", h.counts, h.filterState)
		}
		if strings.Contains(data, token) || !strings.Contains(strings.ToLower(data), "x-directpipe-identity: alice") ||
			strings.Contains(data, "spoofed") || !strings.HasSuffix(data, "\r\n\r\n") {
			t.Fatalf("rewritten head:\n%s", data)
		}
	case verdict == "close":
		if len(h.closed) != 1 || h.counts[contract.MetricTCPDeniedPrefix+"internal_error"] != 1 {
			t.Fatalf("closed %v, counts %v", h.closed, h.counts)
		}
		if strings.Contains(strings.Join(h.logs, "\n"), token) {
			t.Fatal("the token is in the log")
		}
	default:
		reason := strings.TrimPrefix(verdict, "deny:")
		if h.filterState[tcpClusterState] != contract.DenyCluster {
			t.Fatalf("filter state %v: the denial is not routed to the deny listener", h.filterState)
		}
		if !strings.HasPrefix(data, "GET "+contract.DenyPathPrefix+reason+" ") || strings.Contains(data, token) {
			t.Fatalf("deny request:\n%s", data)
		}
		if h.counts[contract.MetricTCPDeniedPrefix+reason] != 1 || len(h.closed) != 0 {
			t.Fatalf("counts %v, closed %v", h.counts, h.closed)
		}
	}
}

func TestTCPUnconfigured(t *testing.T) {
	g := NewTCP()
	g.ContextCreate(streamID, rootID, now)
	h := newFakeHost("")
	h.data = []byte(upgrade("/v1/a"))
	if a := g.DownstreamData(h, streamID, uint32(len(h.data)), false, clock); a != Continue {
		t.Fatalf("action %d", a)
	}
	checkVerdict(t, h, "deny:filter_not_configured", "")
}

func TestTCPUnknownConnection(t *testing.T) {
	g := tcpGate(t)
	h := newFakeHost("")
	if a := g.DownstreamData(h, streamID+7, 10, false, clock); a != Pause {
		t.Fatalf("action %d", a)
	}
	checkVerdict(t, h, "close", "")
}

// TestTCPTick: the tick closes the connections of every plugin that are
// still undecided after the head timeout, once each, and leaves the
// others.
func TestTCPTick(t *testing.T) {
	g := tcpGate(t) // streamID opened at now
	const (
		young   = streamID + 1
		decided = streamID + 2
		other   = streamID + 3 // another plugin's
		gone    = streamID + 4 // closed by the host already
	)
	g.ContextCreate(decided, rootID, now)
	g.ContextCreate(other, rootID+10, now)
	g.ContextCreate(gone, rootID, now)
	g.ContextCreate(young, rootID, now.Add(tcpcheck.HeadTimeout/2))
	h := newFakeHost("")
	h.data = []byte(upgrade("/v1/a", "Authorization: Bearer "+token(t, goodClaims())))
	g.DownstreamData(h, decided, uint32(len(h.data)), false, clock)

	late := now.Add(tcpcheck.HeadTimeout)
	h = newFakeHost("")
	h.errEffective = errors.New("no such context")
	g.Tick(h, rootID, late)
	if h.counts[contract.MetricTCPHeadTimeout] != 3 || len(h.closed) != 0 || h.effective != rootID {
		t.Fatalf("with every context gone: counts %v, closed %v, effective %d", h.counts, h.closed, h.effective)
	}
	// They were marked: a later tick neither counts nor closes them again.
	g.Delete(h, gone)
	h = newFakeHost("")
	g.Tick(h, rootID, late)
	if h.counts[contract.MetricTCPHeadTimeout] != 0 || len(h.closed) != 0 {
		t.Fatalf("counts %v, closed %v", h.counts, h.closed)
	}
	h = newFakeHost("")
	g.Tick(h, rootID, late.Add(time.Hour))
	if h.counts[contract.MetricTCPHeadTimeout] != 1 || len(h.closed) != 1 || h.closed[0] != young || h.effective != rootID {
		t.Fatalf("second tick: counts %v, closed %v, effective %d", h.counts, h.closed, h.effective)
	}
	if g.pending.n != 0 || g.pending.front() != nil {
		t.Fatalf("%d connections still pending", g.pending.n)
	}
}

// reentrant makes h behave as Envoy does when the module closes a
// connection: the host enters the module again for it
// (proxy_on_delete) before CloseDownstream returns.
func reentrant(h *fakeHost, g *TCP) {
	h.onClose = func(id uint32) { g.Delete(h, id) }
}

// TestTCPFloodOfSilentConnections: however many connections stay silent,
// no callback closes more than ClosesPerCall of them (each close nests a
// callback in the host's stack), the worker never holds more than
// MaxPending undecided handshakes, and every silent connection is closed
// in the end, the oldest first.
func TestTCPFloodOfSilentConnections(t *testing.T) {
	for _, n := range []int{1, ClosesPerCall, ClosesPerCall + 1, 1000, MaxPending, MaxPending + 1, 5000} {
		g := NewTCP()
		cfg := newFakeHost(mustJSON(t, policyDoc()))
		if !g.Configure(cfg, rootID, tcpPlugin) {
			t.Fatalf("configuration refused: %q", cfg.logs)
		}
		h := newFakeHost("")
		reentrant(h, g)
		id := uint32(streamID)
		for i := range n {
			g.ContextCreate(id, rootID, now.Add(time.Duration(i)*time.Millisecond))
			before := len(h.closed)
			g.NewConnection(h, id)
			if closed := len(h.closed) - before; closed > 1 || h.effective != id && closed > 0 {
				t.Fatalf("n=%d: a new connection closed %d, effective context %d after", n, closed, h.effective)
			}
			if g.pending.n > MaxPending {
				t.Fatalf("n=%d: %d handshakes pending", n, g.pending.n)
			}
			id++
		}
		shed := max(0, n-MaxPending)
		if h.counts[contract.MetricTCPShed] != shed || len(h.closed) != shed {
			t.Fatalf("n=%d: shed %d, closed %v, want %d", n, h.counts[contract.MetricTCPShed], len(h.closed), shed)
		}
		for i, c := range h.closed {
			if c != uint32(streamID+i) {
				t.Fatalf("n=%d: shed %d before %d", n, c, streamID+i)
			}
		}
		h.closed = nil
		at := now.Add(tcpcheck.HeadTimeout + time.Duration(n)*time.Millisecond)
		ticks := 0
		for g.pending.n > 0 {
			before := len(h.closed)
			g.Tick(h, rootID, at)
			if closed := len(h.closed) - before; closed > ClosesPerCall || closed == 0 {
				t.Fatalf("n=%d: a tick closed %d connections", n, closed)
			}
			ticks++
		}
		if len(h.closed) != n-shed || len(g.conns) != 0 {
			t.Fatalf("n=%d: closed %d, %d connections kept", n, len(h.closed), len(g.conns))
		}
		for i := 1; i < len(h.closed); i++ {
			if h.closed[i] < h.closed[i-1] {
				t.Fatalf("n=%d: %d closed before %d", n, h.closed[i-1], h.closed[i])
			}
		}
		// The tick keeps up: MaxPending handshakes time out within a
		// head timeout's worth of ticks.
		if limit := int(tcpcheck.HeadTimeout / (TickMillis * time.Millisecond)); ticks > limit {
			t.Fatalf("n=%d: %d ticks to close them, more than %d", n, ticks, limit)
		}
	}
}

// TestTCPQueue: connections leave the pending list from anywhere, once.
func TestTCPQueue(t *testing.T) {
	var q queue
	cs := make([]*conn, 4)
	for i := range cs {
		cs[i] = &conn{id: uint32(i)}
		q.push(cs[i])
	}
	for _, i := range []int{2, 0, 2, 3} {
		q.remove(cs[i])
	}
	if q.n != 1 || q.front() != cs[1] || q.tail != cs[1] || cs[1].next != nil {
		t.Fatalf("n %d, front %v", q.n, q.front())
	}
	q.remove(cs[1])
	q.remove(cs[1])
	if q.n != 0 || q.head != nil || q.tail != nil {
		t.Fatalf("n %d, head %v, tail %v", q.n, q.head, q.tail)
	}
}

func TestTCPDelete(t *testing.T) {
	g := tcpGate(t)
	h := newFakeHost("")
	g.Delete(h, streamID)
	g.Delete(h, rootID)
	if len(g.conns)+len(g.policies) != 0 {
		t.Fatalf("state kept: %v %v", g.conns, g.policies)
	}
}

// TestTCPDecidedByTheLatestPolicy: a push starts a new root context for
// the same plugin while a connection accepted under the old one is still
// sending its head. The head is decided by the plugin's latest policy (a
// key the push removed is refused, a key it added is taken), a plugin of
// another name keeps its own, and once the latest root context goes, the
// one the connection came with decides again.
func TestTCPDecidedByTheLatestPolicy(t *testing.T) {
	const (
		newRoot   = 3
		otherRoot = 4
		otherConn = 5
	)
	rotated := []byte("gate-test-rotated-secret-32-bytes")
	rotatedDoc := policyDoc()
	rotatedDoc["jwks"] = map[string]any{"keys": []map[string]string{
		{"kty": "oct", "kid": "k2", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(rotated)},
	}}
	rotatedTok := jwt.NewWithClaims(jwt.SigningMethodHS256, goodClaims())
	rotatedTok.Header["kid"] = "k2"
	newTok, err := rotatedTok.SignedString(rotated)
	if err != nil {
		t.Fatal(err)
	}
	oldTok := token(t, goodClaims())

	decide := func(g *TCP, id uint32, tok string) string {
		t.Helper()
		h := newFakeHost("")
		h.data = []byte(upgrade("/v1/a", "Authorization: Bearer "+tok))
		g.DownstreamData(h, id, uint32(len(h.data)), false, clock)
		if h.counts[contract.MetricTCPAllowed] == 1 {
			return "allow"
		}
		return "deny"
	}
	for _, tt := range []struct {
		name   string
		tok    string
		delete bool // the new root context is deleted before the head ends
		want   string
	}{
		{"a key removed by the push", oldTok, false, "deny"},
		{"a key added by the push", newTok, false, "allow"},
		{"the new root context gone: the old policy", oldTok, true, "allow"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := tcpGate(t) // streamID accepted under rootID
			if !g.Configure(newFakeHost(mustJSON(t, rotatedDoc)), newRoot, tcpPlugin) {
				t.Fatal("the pushed configuration was refused")
			}
			// Another tcp route, on the old keys, is not moved by the push.
			if !g.Configure(newFakeHost(mustJSON(t, policyDoc())), otherRoot, tcpPlugin+"-other") {
				t.Fatal("the other plugin's configuration was refused")
			}
			g.ContextCreate(otherConn, otherRoot, now)
			if got := decide(g, otherConn, oldTok); got != "allow" {
				t.Errorf("the other plugin's connection with its key: %s", got)
			}
			if tt.delete {
				g.Delete(newFakeHost(""), newRoot)
			}
			if got := decide(g, streamID, tt.tok); got != tt.want {
				t.Errorf("%s, want %s", got, tt.want)
			}
		})
	}
}

// TestTCPTrickledHead: a head sent a byte per packet, as large as a head
// may be, is read from the host once, byte for byte, and decided as if it
// came at once; a client that trickles garbage is refused at its first
// bad line.
func TestTCPTrickledHead(t *testing.T) {
	good := token(t, goodClaims())
	head := upgrade("/v1/a", "Authorization: Bearer "+good, "X-Pad: ")
	head = strings.Replace(head, "X-Pad: \r\n", "X-Pad: "+strings.Repeat("p", contract.MaxHeadBytes-len(head))+"\r\n", 1)
	if len(head) != contract.MaxHeadBytes {
		t.Fatalf("head of %d bytes", len(head))
	}
	for _, tt := range []struct {
		name    string
		in      string
		verdict string
	}{
		{"a head at the limit", head, "allow"},
		{"garbage after the request line", "GET /v1/a HTTP/1.1\r\nHost : a\r\n" + strings.Repeat("x", 5000), "deny:bad_handshake"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := tcpGate(t)
			h := newFakeHost("")
			var a Action
			for n := 1; n <= len(tt.in); n++ {
				h.data = []byte(tt.in[:n])
				if a = g.DownstreamData(h, streamID, uint32(n), false, clock); a != Pause {
					break
				}
			}
			if a != Continue {
				t.Fatalf("still held after %d bytes (logs %q)", len(tt.in), h.logs)
			}
			checkVerdict(t, h, tt.verdict, good)
			if h.dataRead > len(tt.in) {
				t.Errorf("read %d bytes from the host for a head of %d", h.dataRead, len(tt.in))
			}
		})
	}
}

// respondingHost is a host that writes to its client, as the native
// network filter does.
type respondingHost struct {
	*fakeHost
	answered   []byte
	errRespond error
}

func (h *respondingHost) Respond(data []byte) error {
	if h.errRespond != nil {
		return h.errRespond
	}
	h.answered = append([]byte(nil), data...)
	h.data = nil
	return nil
}

// TestTCPRespondingHost: a host that can write to its client gets each
// denial's raw answer to write, and the connection is held (the host
// closes it once written); nothing goes to the deny listener. An allowed
// head is rewritten as for any host.
func TestTCPRespondingHost(t *testing.T) {
	good := token(t, goodClaims())
	tests := []struct {
		name       string
		head       string
		errRespond error
		action     Action
		status     string // the answer's status line; "" for none
		count      string
	}{
		{"allowed", upgrade("/v1/a", "Authorization: Bearer "+good), nil, Continue, "", contract.MetricTCPAllowed},
		{"no token", upgrade("/v1/a"), nil, Pause, "HTTP/1.1 401 Unauthorized", contract.MetricTCPDeniedPrefix + contract.ReasonMissingToken},
		{"not a handshake", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", nil, Pause, "HTTP/1.1 400 Bad Request", contract.MetricTCPDeniedPrefix + contract.ReasonBadHandshake},
		{"the answer cannot be written", upgrade("/v1/a"), errors.New("refused"), Pause, "", contract.MetricTCPDeniedPrefix + contract.ReasonInternal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := tcpGate(t)
			h := &respondingHost{fakeHost: newFakeHost(""), errRespond: tt.errRespond}
			h.data = []byte(tt.head)
			if a := g.DownstreamData(h, streamID, uint32(len(tt.head)), false, clock); a != tt.action {
				t.Fatalf("action %d, want %d (logs %q)", a, tt.action, h.logs)
			}
			if len(h.filterState) != 0 {
				t.Fatalf("filter state %v: a responding host's denials never go to the deny listener", h.filterState)
			}
			if h.counts[tt.count] != 1 {
				t.Fatalf("counts %v, want %s", h.counts, tt.count)
			}
			answer := string(h.answered)
			if !strings.HasPrefix(answer, tt.status+"\r\n") != (tt.status == "") {
				t.Fatalf("answer %q, want status line %q", answer, tt.status)
			}
			if tt.errRespond != nil && len(h.closed) != 1 {
				t.Fatalf("closed %v: a denial that cannot be answered must close", h.closed)
			}
			if strings.Contains(answer, good) {
				t.Fatal("the answer carries the token")
			}
		})
	}
}
