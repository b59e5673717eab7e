package tcpcheck

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/httphead"
)

var (
	secret = []byte("tcpcheck-test-secret-of-32-bytes")
	now    = time.Unix(1_800_000_000, 0)
)

func testPolicy(t testing.TB) *auth.Policy {
	t.Helper()
	doc, _ := json.Marshal(map[string]any{
		"name":    "voice",
		"realm":   "directpipe",
		"sources": []map[string]any{{"bearer": true}, {"subprotocol_prefix": "bearer."}, {"query": "access_token"}},
		"jwks": map[string]any{"keys": []map[string]string{
			{"kty": "oct", "kid": "k1", "alg": "HS256", "k": base64.RawURLEncoding.EncodeToString(secret)},
		}},
		"max_token_bytes": 4096,
		"identity_header": "x-directpipe-identity",
		"claim_headers":   map[string]string{"tenant": "x-directpipe-tenant"},
		"required_scopes": []string{"voice"},
		"origins":         map[string]any{"allow": []string{"https://app.example"}, "allow_missing": true},
		// Set by another policy of the same control plane.
		"protected_headers": []string{"x-partner-id"},
	})
	cfg, err := auth.ParseConfig(doc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Single() == nil {
		t.Fatal("a bare policy document has no single policy")
	}
	return cfg.Single()
}

func token(t testing.TB, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = "k1"
	s, err := tok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "tenant": "acme", "scope": "voice", "exp": now.Add(time.Hour).Unix()}
}

// without drops a header line from a head.
func without(head, name string) string {
	var kept []string
	for _, l := range strings.Split(head, "\r\n") {
		if !strings.HasPrefix(l, name+":") {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "\r\n")
}

// head builds an upgrade request with extra header lines.
func head(target string, lines ...string) string {
	s := "GET " + target + " HTTP/1.1\r\nHost: voice.local\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	for _, l := range lines {
		s += l + "\r\n"
	}
	return s + "\r\n"
}

func TestInspectAllows(t *testing.T) {
	p := testPolicy(t)
	tok := token(t, goodClaims())
	tests := []struct {
		name, in string
		target   string // of the rewritten head
		protocol string // Sec-WebSocket-Protocol left, "" for none
	}{
		{"bearer", head("/v1/a", "Authorization: Bearer "+tok, "X-Directpipe-Tenant: spoofed"), "/v1/a", ""},
		{"subprotocol", head("/v1/a", "Sec-WebSocket-Protocol: voice.v1, bearer."+tok, "Origin: https://app.example"), "/v1/a", "voice.v1"},
		{"query", head("/v1/a?x=1&access_token=" + tok + "&y=2"), "/v1/a?x=1&y=2", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Inspect(p, []byte(tt.in), now)
			if o.Verdict != Allow {
				t.Fatalf("verdict %v (%s)", o.Verdict, o.Decision.Reason)
			}
			if o.HeadLen != len(tt.in) {
				t.Errorf("head length %d, want %d", o.HeadLen, len(tt.in))
			}
			if strings.Contains(string(o.Replacement), tok) {
				t.Error("the token is forwarded")
			}
			h, n, err := httphead.Parse(o.Replacement)
			if err != nil || n != len(o.Replacement) {
				t.Fatalf("rewritten head does not parse: %v", err)
			}
			if h.Target != tt.target {
				t.Errorf("target %q, want %q", h.Target, tt.target)
			}
			if v, _ := h.Get("sec-websocket-protocol"); v != tt.protocol {
				t.Errorf("subprotocols %q, want %q", v, tt.protocol)
			}
			if v := h.Values("x-directpipe-tenant"); len(v) != 1 || v[0] != "acme" {
				t.Errorf("tenant header %q", v)
			}
			if v, _ := h.Get("x-directpipe-identity"); v != "alice" {
				t.Errorf("identity %q", v)
			}
			if _, ok := h.Get("authorization"); ok {
				t.Error("authorization forwarded")
			}
			if v, _ := h.Get("sec-websocket-key"); v == "" {
				t.Error("the handshake lost its key")
			}
			assertClosesAfterRefusal(t, h)
		})
	}
}

// assertClosesAfterRefusal checks that a forwarded head asks the back end
// to close after any answer but a 101: only the first request of a
// connection is checked (regression: a second request rode a connection
// whose upgrade the back end answered 200 or 404).
func assertClosesAfterRefusal(t *testing.T, h *httphead.Head) {
	t.Helper()
	if v := h.Values("connection"); len(v) != 1 || v[0] != "Upgrade, close" {
		t.Errorf("connection %q, want exactly \"Upgrade, close\"", v)
	}
}

// TestInspectConnectionHeader: whatever Connection the client sent, the
// back end is told Upgrade and close and nothing else, so no token of the
// client's makes another header hop-by-hop behind the module.
func TestInspectConnectionHeader(t *testing.T) {
	p := testPolicy(t)
	tok := token(t, goodClaims())
	for _, conn := range []string{"Upgrade", "keep-alive, Upgrade", "Upgrade, X-Directpipe-Identity", "upgrade, keep-alive, x-directpipe-tenant"} {
		in := strings.Replace(head("/v1/a", "Authorization: Bearer "+tok), "Connection: Upgrade", "Connection: "+conn, 1)
		o := Inspect(p, []byte(in), now)
		if o.Verdict != Allow {
			t.Fatalf("%q: verdict %v (%s)", conn, o.Verdict, o.Decision.Reason)
		}
		h, _, err := httphead.Parse(o.Replacement)
		if err != nil {
			t.Fatal(err)
		}
		assertClosesAfterRefusal(t, h)
	}
	// Two Connection lines are one list (RFC 9110 §5.3); the forwarded
	// head has one.
	in := head("/v1/a", "Authorization: Bearer "+tok, "Connection: keep-alive")
	o := Inspect(p, []byte(in), now)
	if o.Verdict != Allow {
		t.Fatalf("two Connection lines: verdict %v (%s)", o.Verdict, o.Decision.Reason)
	}
	h, _, _ := httphead.Parse(o.Replacement)
	assertClosesAfterRefusal(t, h)
}

// TestInspectStripsEveryProtectedHeader: a client's copies of identity
// and claim headers, in any case and however often, are gone from the
// forwarded head, and so are those another policy sets (regression,
// issue 11).
func TestInspectStripsEveryProtectedHeader(t *testing.T) {
	p := testPolicy(t)
	in := head("/v1/a", "Authorization: Bearer "+token(t, goodClaims()),
		"X-DIRECTPIPE-IDENTITY: admin", "x-directpipe-identity: root", "x-Directpipe-Tenant: other",
		"X-Partner-Id: acme", "x-partner-id: globex", "X-Kept: yes")
	o := Inspect(p, []byte(in), now)
	if o.Verdict != Allow {
		t.Fatalf("verdict %v (%s)", o.Verdict, o.Decision.Reason)
	}
	h, _, err := httphead.Parse(o.Replacement)
	if err != nil {
		t.Fatal(err)
	}
	if v := h.Values("x-directpipe-identity"); len(v) != 1 || v[0] != "alice" {
		t.Errorf("identity %q, want only the verified one", v)
	}
	if v := h.Values("x-directpipe-tenant"); len(v) != 1 || v[0] != "acme" {
		t.Errorf("tenant %q, want only the verified one", v)
	}
	if v := h.Values("x-partner-id"); len(v) != 0 {
		t.Errorf("another policy's header forwarded: %q", v)
	}
	if v, _ := h.Get("x-kept"); v != "yes" {
		t.Error("an unrelated header was dropped")
	}
}

func TestInspectDenies(t *testing.T) {
	p := testPolicy(t)
	tok := token(t, goodClaims())
	noScope := goodClaims()
	delete(noScope, "scope")
	expired := goodClaims()
	expired["exp"] = now.Add(-time.Hour).Unix()
	tests := []struct {
		name, in  string
		reason    string
		status    int
		challenge string // "" for none
	}{
		{"no token", head("/"), contract.ReasonMissingToken, 401, `Bearer realm="directpipe"`},
		{"expired", head("/", "Authorization: Bearer "+token(t, expired)), contract.ReasonExpiredToken, 401, `Bearer realm="directpipe", error="invalid_token"`},
		{"forged", head("/", "Authorization: Bearer "+tok[:len(tok)-2]+"xx"), contract.ReasonBadSignature, 401, `Bearer realm="directpipe", error="invalid_token"`},
		{"scope", head("/", "Authorization: Bearer "+token(t, noScope)), contract.ReasonScope, 403, `Bearer realm="directpipe", error="insufficient_scope"`},
		{"origin", head("/", "Authorization: Bearer "+tok, "Origin: https://evil.example"), contract.ReasonOriginDenied, 403, ""},
		{"garbage", "\x16\x03\x01\x00\xa5\x01\x00", contract.ReasonBadHandshake, 400, ""},
		{"not an upgrade", "GET / HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer " + tok + "\r\n\r\n", contract.ReasonBadHandshake, 400, ""},
		{"a body", head("/", "Authorization: Bearer "+tok, "Content-Length: 5") + "hello", contract.ReasonBadHandshake, 400, ""},
		{"bytes before 101", head("/", "Authorization: Bearer "+tok) + "\x81\x05hello", contract.ReasonBadHandshake, 400, ""},
		{"two hosts", head("/", "Host: other", "Authorization: Bearer "+tok), contract.ReasonBadHandshake, 400, ""},
		{"two authorizations", head("/", "Authorization: Bearer "+tok, "Authorization: Bearer x"), contract.ReasonBadHandshake, 400, ""},
		{"too large", head("/", "X-Pad: "+strings.Repeat("a", contract.MaxHeadBytes)), contract.ReasonBadHandshake, 400, ""},
		// Regression (issue 11): a head without a valid version and key
		// reached the back end.
		{"no version", without(head("/", "Authorization: Bearer "+tok), "Sec-WebSocket-Version"), contract.ReasonBadHandshake, 400, ""},
		{"version 8", strings.Replace(head("/", "Authorization: Bearer "+tok), "Version: 13", "Version: 8", 1), contract.ReasonBadHandshake, 400, ""},
		{"two versions", head("/", "Authorization: Bearer "+tok, "Sec-WebSocket-Version: 13"), contract.ReasonBadHandshake, 400, ""},
		{"no key", without(head("/", "Authorization: Bearer "+tok), "Sec-WebSocket-Key"), contract.ReasonBadHandshake, 400, ""},
		{"key not base64", strings.Replace(head("/", "Authorization: Bearer "+tok), "dGhlIHNhbXBsZSBub25jZQ==", "not a key at all, no!!!!", 1), contract.ReasonBadHandshake, 400, ""},
		{"key of 15 bytes", strings.Replace(head("/", "Authorization: Bearer "+tok), "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ", 1), contract.ReasonBadHandshake, 400, ""},
		{"key of 17 bytes", strings.Replace(head("/", "Authorization: Bearer "+tok), "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZXg=", 1), contract.ReasonBadHandshake, 400, ""},
		{"two keys", head("/", "Authorization: Bearer "+tok, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="), contract.ReasonBadHandshake, 400, ""},
		// Regression (issue 11): x_directpipe_identity reads as
		// x-directpipe-identity in many back ends.
		{"underscore identity", head("/", "Authorization: Bearer "+tok, "X_Directpipe_Identity: admin"), contract.ReasonBadHandshake, 400, ""},
		{"any underscore name", head("/", "Authorization: Bearer "+tok, "x_trace: 1"), contract.ReasonBadHandshake, 400, ""},
		// Regression: in absolute form the back end takes the host from
		// the target and the module from Host.
		{"absolute form", head("http://evil.example/v1/a", "Authorization: Bearer "+tok), contract.ReasonBadHandshake, 400, ""},
		{"absolute form https", head("https://voice.local/v1/a", "Authorization: Bearer "+tok), contract.ReasonBadHandshake, 400, ""},
		{"authority form", head("voice.local:80", "Authorization: Bearer "+tok), contract.ReasonBadHandshake, 400, ""},
		{"asterisk form", head("*", "Authorization: Bearer "+tok), contract.ReasonBadHandshake, 400, ""},
		{"fragment", head("/v1/a#?access_token=x", "Authorization: Bearer "+tok), contract.ReasonBadHandshake, 400, ""},
		// A second protocol beside websocket could be the one a back end
		// switches to: h2c would carry requests never checked.
		{"h2c beside websocket", strings.Replace(head("/", "Authorization: Bearer "+tok), "Upgrade: websocket", "Upgrade: websocket, h2c", 1), contract.ReasonBadHandshake, 400, ""},
		{"h2c on a second Upgrade line", head("/", "Authorization: Bearer "+tok, "Upgrade: h2c"), contract.ReasonBadHandshake, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Inspect(p, []byte(tt.in), now)
			if o.Verdict != Deny || o.Decision.Reason != tt.reason || o.Decision.Status != tt.status {
				t.Fatalf("got %v %d %s, want deny %d %s", o.Verdict, o.Decision.Status, o.Decision.Reason, tt.status, tt.reason)
			}
			h, n, err := httphead.Parse(o.Replacement)
			if err != nil || n != len(o.Replacement) {
				t.Fatalf("deny request does not parse: %v", err)
			}
			if h.Target != contract.DenyPathPrefix+tt.reason {
				t.Errorf("deny path %q", h.Target)
			}
			if v, _ := h.Get(contract.ChallengeHeader); v != tt.challenge {
				t.Errorf("challenge %q, want %q", v, tt.challenge)
			}
			if !h.HasToken("connection", "close") {
				t.Error("the deny listener would keep the connection open")
			}
			if strings.Contains(string(o.Replacement), tok[:20]) {
				t.Error("the token goes to the deny listener")
			}
		})
	}
}

func TestInspectWaitsForTheWholeHead(t *testing.T) {
	p := testPolicy(t)
	full := head("/", "Authorization: Bearer "+token(t, goodClaims()))
	for _, cut := range []int{0, 1, 10, len(full) / 2, len(full) - 1} {
		if o := Inspect(p, []byte(full[:cut]), now); o.Verdict != NeedMore {
			t.Errorf("after %d of %d bytes: %v %s", cut, len(full), o.Verdict, o.Decision.Reason)
		}
	}
	if o := Inspect(p, []byte(full), now); o.Verdict != Allow {
		t.Errorf("whole head: %v %s", o.Verdict, o.Decision.Reason)
	}
}

func FuzzInspect(f *testing.F) {
	p := testPolicy(f)
	tok := token(f, goodClaims())
	f.Add([]byte(head("/", "Authorization: Bearer "+tok)))
	f.Add([]byte(head("/?access_token="+tok, "Sec-WebSocket-Protocol: a, bearer.x")))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Add([]byte(head("http://evil/v1/a", "Authorization: Bearer "+tok)))
	f.Add([]byte(head("/", "Authorization: Bearer "+tok, "Sec-WebSocket-Protocol: bearer.a", "Sec-WebSocket-Protocol: bearer.b")))
	f.Fuzz(func(t *testing.T, in []byte) {
		o := Inspect(p, in, now)
		switch o.Verdict {
		case NeedMore:
			return
		case Allow:
			if o.HeadLen != len(in) {
				t.Fatalf("allowed with %d bytes after the head", len(in)-o.HeadLen)
			}
			h, _, err := httphead.Parse(o.Replacement)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(h.Target, "/") {
				t.Fatalf("allowed target %q", h.Target)
			}
			assertClosesAfterRefusal(t, h)
		case Deny:
			if o.Decision.Status == 0 || o.Decision.Allow {
				t.Fatalf("deny decision %+v", o.Decision)
			}
		}
		if _, n, err := httphead.Parse(o.Replacement); err != nil || n != len(o.Replacement) {
			t.Fatalf("replacement does not parse: %v", err)
		}
	})
}

// TestInspectPublicPolicy: a tcp route without auth still requires a
// WebSocket handshake and strips identity headers a client wrote
// (regression, issue 11: such a route had no check at all).
func TestInspectPublicPolicy(t *testing.T) {
	cfg, err := auth.ParseConfig([]byte(`{"name":"open","public":true,"protected_headers":["x-directpipe-identity","x-directpipe-sub"]}`))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Single()
	o := Inspect(p, []byte(head("/v1/a", "X-DIRECTPIPE-IDENTITY: admin", "x-directpipe-sub: admin", "X-Kept: yes")), now)
	if o.Verdict != Allow {
		t.Fatalf("verdict %v (%s)", o.Verdict, o.Decision.Reason)
	}
	h, _, err := httphead.Parse(o.Replacement)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := h.Get("x-directpipe-identity"); ok {
		t.Error("a spoofed identity was forwarded")
	}
	if _, ok := h.Get("x-directpipe-sub"); ok {
		t.Error("a spoofed claim was forwarded")
	}
	if v, _ := h.Get("x-kept"); v != "yes" {
		t.Error("an unrelated header was dropped")
	}
	assertClosesAfterRefusal(t, h)
	for name, in := range map[string]string{
		"absolute form": head("http://evil.example/v1/a"),
		"no key":        without(head("/v1/a"), "Sec-WebSocket-Key"),
		"underscore":    head("/v1/a", "X_Directpipe_Identity: admin"),
		"garbage":       "\x16\x03\x01\x00\xa5\x01\x00\r\n\r\n",
	} {
		if o := Inspect(p, []byte(in), now); o.Verdict != Deny || o.Decision.Reason != contract.ReasonBadHandshake {
			t.Errorf("%s: verdict %v (%s), want a bad_handshake denial", name, o.Verdict, o.Decision.Reason)
		}
	}
	for _, doc := range []string{
		`{"name":"open","public":true,"sources":[{"bearer":true}]}`,
		`{"name":"open","public":true,"identity_header":"x-id"}`,
		`{"name":"open","public":true,"api_keys":[{"sha256":"` + strings.Repeat("0", 64) + `","identity":"a"}]}`,
	} {
		if _, err := auth.ParseConfig([]byte(doc)); err == nil {
			t.Errorf("a public policy that could accept or set something was taken: %s", doc)
		}
	}
}

// TestDenyResponse: the raw answer a native filter writes is the deny
// listener's: status, JSON body, the challenge for a 401, Retry-After for
// a 429, and close; it parses as HTTP/1.1.
func TestDenyResponse(t *testing.T) {
	for _, reason := range contract.Reasons() {
		t.Run(reason, func(t *testing.T) {
			d := auth.Denial(reason)
			raw := DenyResponse(d, "voice")
			resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
			if err != nil {
				t.Fatalf("%q: %v", raw, err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != contract.Status(reason) || !strings.HasPrefix(resp.Status, strconv.Itoa(resp.StatusCode)+" ") || len(resp.Status) < 5 {
				t.Errorf("status %q, want %d with its phrase", resp.Status, contract.Status(reason))
			}
			if !bytes.Equal(body, contract.Body(reason)) || resp.Header.Get("Content-Type") != "application/json" || !resp.Close {
				t.Errorf("body %q, content-type %q, close %v", body, resp.Header.Get("Content-Type"), resp.Close)
			}
			if got, want := resp.Header.Get("Www-Authenticate"), ""; contract.Challenges(reason) {
				if want = d.WWWAuthenticate("voice"); got != want {
					t.Errorf("challenge %q, want %q", got, want)
				}
			} else if got != want {
				t.Errorf("challenge %q on a %d", got, resp.StatusCode)
			}
			if got := resp.Header.Get("Retry-After"); (got != "") != contract.RetryAfter(reason) {
				t.Errorf("Retry-After %q on a %d", got, resp.StatusCode)
			}
		})
	}
}
