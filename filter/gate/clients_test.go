package gate

import (
	"errors"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

// clientsConfig is the control plane's document with client lists on
// route "voice" (its policy) and route "public" (no auth).
func clientsConfig(t testing.TB) string {
	return mustJSON(t, map[string]any{
		"policies": map[string]any{"voice": policyDoc()},
		"clients": map[string]any{
			"voice":  map[string]any{"allow": []string{"127.0.0.0/8"}, "deny": []string{"127.0.0.2/32"}},
			"public": map[string]any{"deny": []string{"10.0.0.0/8"}},
		},
	})
}

func TestHTTPClientAddress(t *testing.T) {
	good := token(t, goodClaims())
	tests := []struct {
		name, route, addr string
		addrErr           error
		auth              string // the token, "" for none
		wantStatus        int    // 0: allowed
		wantReason        string
		wantReads         int // reads of source.address
	}{
		{name: "allowed address, good token", route: "voice", addr: "127.0.0.1:5000", auth: good, wantReads: 1},
		{name: "allowed address, no token: the token decides", route: "voice", addr: "127.0.0.1:5000", wantStatus: 401, wantReason: "missing_token", wantReads: 1},
		{name: "denied address, good token", route: "voice", addr: "127.0.0.2:5000", auth: good, wantStatus: 403, wantReason: "client_address", wantReads: 1},
		{name: "not on the allow list", route: "voice", addr: "10.1.2.3:5000", auth: good, wantStatus: 403, wantReason: "client_address", wantReads: 1},
		{name: "address unreadable", route: "voice", addrErr: errors.New("not found"), auth: good, wantStatus: 403, wantReason: "client_address", wantReads: 1},
		{name: "public route, denied address", route: "public", addr: "10.0.0.1:1", wantStatus: 403, wantReason: "client_address", wantReads: 1},
		{name: "public route, other address", route: "public", addr: "127.0.0.1:1", wantReads: 1},
		{name: "route without lists reads no address", route: "other", addr: "10.0.0.1:1", wantReads: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewHTTP()
			h := newFakeHost(clientsConfig(t))
			if !g.Configure(h, rootID) {
				t.Fatalf("configuration refused: %q", h.logs)
			}
			g.ContextCreate(streamID, rootID)
			h.route, h.routeFound = tt.route, true
			if tt.route == "voice" {
				h.routePolicy, h.routeTagged = "voice", true
			}
			h.clientAddr, h.clientAddrErr = tt.addr, tt.addrErr
			h.headers[":path"] = "/v1/a"
			if tt.auth != "" {
				h.headers["authorization"] = "Bearer " + tt.auth
			}
			a := g.RequestHeaders(h, streamID, now)
			if h.clientAddrs != tt.wantReads {
				t.Errorf("source.address read %d times, want %d", h.clientAddrs, tt.wantReads)
			}
			if tt.wantStatus == 0 {
				if a != Continue || h.local != nil {
					t.Fatalf("action %d, local reply %+v", a, h.local)
				}
				return
			}
			if a != Pause || h.local == nil || h.local.status != tt.wantStatus || h.local.details != contract.LocalReplyDetailPrefix+tt.wantReason {
				t.Fatalf("action %d, local reply %+v", a, h.local)
			}
			if h.counts[contract.MetricDeniedPrefix+tt.wantReason] != 1 {
				t.Fatalf("counts %v", h.counts)
			}
			if tt.wantReason == contract.ReasonClientAddress {
				if _, ok := h.local.headers["www-authenticate"]; ok {
					t.Fatal("a refused address got an auth challenge")
				}
				if !strings.Contains(h.local.body, `"client_address"`) {
					t.Fatalf("body %q", h.local.body)
				}
			}
		})
	}
}

func TestTCPClientAddress(t *testing.T) {
	good := token(t, goodClaims())
	allowed := upgrade("/v1/a", "Authorization: Bearer "+good)
	tests := []struct {
		name    string
		clients any // the policy's clients, nil for none
		addr    string
		verdict string
		reads   int
	}{
		{"no lists: no read", nil, "10.0.0.1:1", "allow", 0},
		{"allowed", map[string]any{"allow": []string{"127.0.0.0/8"}}, "127.0.0.1:1", "allow", 1},
		{"not allowed", map[string]any{"allow": []string{"10.0.0.0/8"}}, "127.0.0.1:1", "deny:client_address", 1},
		{"denied", map[string]any{"deny": []string{"127.0.0.0/8"}}, "127.0.0.1:1", "deny:client_address", 1},
		{"deny wins", map[string]any{"allow": []string{"127.0.0.0/8"}, "deny": []string{"127.0.0.1/32"}}, "127.0.0.1:1", "deny:client_address", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := policyDoc()
			if tt.clients != nil {
				doc["clients"] = tt.clients
			}
			g := NewTCP()
			h := newFakeHost(mustJSON(t, doc))
			if !g.Configure(h, rootID, tcpPlugin) {
				t.Fatalf("configuration refused: %q", h.logs)
			}
			g.ContextCreate(streamID, rootID, now)
			conn := newFakeHost("")
			conn.clientAddr = tt.addr
			if a := g.NewConnection(conn, streamID); a != Pause {
				t.Fatalf("a new connection is not held: %d", a)
			}
			conn.data = []byte(allowed)
			if a := g.DownstreamData(conn, streamID, uint32(len(allowed)), false, clock); a != Continue {
				t.Fatalf("action %d (logs %q)", a, conn.logs)
			}
			if conn.clientAddrs != tt.reads {
				t.Fatalf("source.address read %d times, want %d", conn.clientAddrs, tt.reads)
			}
			checkVerdict(t, conn, tt.verdict, good)
		})
	}
}
