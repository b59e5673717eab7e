package gate

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

// routedConfig guards route "voice" with the test policy and leaves route
// "public" open, as the control plane's route map does.
func routedConfig(t testing.TB) string {
	return mustJSON(t, map[string]any{
		"routes":   map[string]string{"voice": "voice", "public": ""},
		"policies": map[string]any{"voice": policyDoc()},
	})
}

// policiesConfig is what the control plane sends: the policies alone,
// each route naming its own in its metadata.
func policiesConfig(t testing.TB) string {
	return mustJSON(t, map[string]any{"policies": map[string]any{"voice": policyDoc()}})
}

// tagged makes the matched route's metadata name policy.
func tagged(policy string) func(*fakeHost) {
	return func(h *fakeHost) { h.routePolicy, h.routeTagged = policy, true }
}

func TestHTTPConfigure(t *testing.T) {
	tests := []struct {
		name      string
		config    string
		configErr error
		ok        bool
	}{
		{"route map", routedConfig(t), nil, true},
		{"one policy", mustJSON(t, policyDoc()), nil, true},
		{"not JSON", "{", nil, false},
		{"unknown field", `{"name":"p","sources":[{"bearer":true}],"api_keys":[{"id":"a","sha256":"` + strings.Repeat("0", 64) + `"}],"bogus":1}`, nil, false},
		{"unreadable", "", errors.New("host refused"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newFakeHost(tt.config)
			h.configErr = tt.configErr
			g := NewHTTP()
			if got := g.Configure(h, rootID); got != tt.ok {
				t.Fatalf("Configure = %v, want %v (logs %q)", got, tt.ok, h.logs)
			}
			if !tt.ok {
				if len(h.logs) == 0 {
					t.Error("a refused configuration logged nothing")
				}
				if g.configs[rootID] != nil {
					t.Error("a refused configuration was kept")
				}
				return
			}
			for _, name := range []string{contract.MetricAllowed, contract.MetricDeniedPrefix + "missing_token", contract.MetricDeniedPrefix + "filter_not_configured"} {
				if !h.defined[name] {
					t.Errorf("counter %s not defined at configure", name)
				}
			}
		})
	}
}

// TestHTTPConfigureKeepsPrevious: a bad update of one plugin leaves its
// last good configuration serving.
func TestHTTPConfigureKeepsPrevious(t *testing.T) {
	g := NewHTTP()
	if !g.Configure(newFakeHost(routedConfig(t)), rootID) {
		t.Fatal("good configuration refused")
	}
	if g.Configure(newFakeHost("{"), rootID) {
		t.Fatal("bad configuration accepted")
	}
	g.ContextCreate(streamID, rootID)
	h := newFakeHost("")
	h.route, h.routeFound = "public", true
	if a := g.RequestHeaders(h, streamID, now); a != Continue || h.local != nil {
		t.Fatalf("public route after a bad update: action %d, local reply %+v", a, h.local)
	}
}

// TestHTTPReadsEveryLineOfAHeader: a header sent on two lines is read as
// one list, as the tcp module reads it (regression: the HTTP module read
// only the first line of Sec-WebSocket-Protocol, so a token on the
// second was missed over HTTP and taken in tcp mode, and two token
// entries on two lines were let through).
func TestHTTPReadsEveryLineOfAHeader(t *testing.T) {
	good := token(t, goodClaims())
	tests := []struct {
		name     string
		lines    []string
		status   int    // 0: allowed
		protocol string // forwarded Sec-WebSocket-Protocol when allowed
	}{
		{"token on the second line", []string{"voice.v1", "bearer." + good}, 0, "voice.v1"},
		{"token on the first line", []string{"bearer." + good, "voice.v1"}, 0, "voice.v1"},
		{"two tokens on two lines", []string{"bearer." + good, "bearer.forged"}, 401, ""},
		{"forged then valid on two lines", []string{"bearer.forged", "bearer." + good}, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewHTTP()
			if !g.Configure(newFakeHost(policiesConfig(t)), rootID) {
				t.Fatal("configuration refused")
			}
			g.ContextCreate(streamID, rootID)
			h := newFakeHost("")
			h.route, h.routeFound = "voice", true
			tagged("voice")(h)
			h.headers[":path"] = "/v1/voice"
			h.headers["sec-websocket-protocol"] = tt.lines[0]
			for _, l := range tt.lines[1:] {
				h.extra = append(h.extra, [2]string{"sec-websocket-protocol", l})
			}
			a := g.RequestHeaders(h, streamID, now)
			if tt.status != 0 {
				if a != Pause || h.local == nil || h.local.status != tt.status {
					t.Fatalf("action %d, reply %+v, want a %d", a, h.local, tt.status)
				}
				return
			}
			if a != Continue || h.local != nil {
				t.Fatalf("action %d, reply %+v, want allowed", a, h.local)
			}
			got, _ := headerLookup(must(h.RequestHeaders()))("sec-websocket-protocol")
			if got != tt.protocol {
				t.Errorf("forwarded subprotocols %q, want %q", got, tt.protocol)
			}
			if v := h.headers["x-directpipe-identity"]; v != "alice" {
				t.Errorf("identity %q", v)
			}
		})
	}
	t.Run("headers unreadable", func(t *testing.T) {
		g := NewHTTP()
		g.Configure(newFakeHost(policiesConfig(t)), rootID)
		g.ContextCreate(streamID, rootID)
		h := newFakeHost("")
		h.route, h.routeFound = "public", true
		h.errHeaders = errors.New("host refused")
		if a := g.RequestHeaders(h, streamID, now); a != Pause || h.local == nil || h.local.status != 500 {
			t.Fatalf("action %d, reply %+v, want a 500", a, h.local)
		}
	})
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestHTTPRequestHeaders(t *testing.T) {
	good := token(t, goodClaims())
	noScope := token(t, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	tests := []struct {
		name       string
		config     string // "" leaves the plugin unconfigured
		route      string
		routeFound bool
		headers    map[string]string
		prepare    func(*fakeHost)

		action Action
		status int    // of the local reply, 0 for none
		reason string // in the details and the counter
		// after, for an allowed stream: headers that must be set or gone
		set    map[string]string
		absent []string
	}{
		{
			name: "bearer token allowed", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good, "x-directpipe-tenant": "spoofed", "x-directpipe-identity": "mallory"},
			action:  Continue,
			set:     map[string]string{"x-directpipe-identity": "alice", "x-directpipe-tenant": "acme", ":path": "/v1/a"},
			absent:  []string{"authorization"},
		},
		{
			name: "query token stripped from the path", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a?x=1&access_token=" + good},
			action:  Continue,
			set:     map[string]string{":path": "/v1/a?x=1", "x-directpipe-identity": "alice"},
		},
		{
			name: "subprotocol token stripped, others kept", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "sec-websocket-protocol": "voice.v1, bearer." + good},
			action:  Continue,
			set:     map[string]string{"sec-websocket-protocol": "voice.v1", "x-directpipe-identity": "alice"},
		},
		{
			name: "public route untouched", config: routedConfig(t), route: "public", routeFound: true,
			headers: map[string]string{":path": "/", "authorization": "Bearer whatever"},
			action:  Continue,
			set:     map[string]string{"authorization": "Bearer whatever"},
		},
		{
			name: "no route matched: the router answers", config: routedConfig(t), routeFound: false,
			headers: map[string]string{":path": "/nowhere"},
			action:  Continue,
		},
		{
			// Regression (issue 11): a public route passed a client's own
			// identity and claim headers to the back end.
			name: "public route loses spoofed identity and claim headers", config: routedConfig(t), route: "public", routeFound: true,
			headers: map[string]string{":path": "/", "x-directpipe-identity": "admin", "x-directpipe-tenant": "acme", "x-other": "kept"},
			action:  Continue,
			set:     map[string]string{"x-other": "kept"},
			absent:  []string{"x-directpipe-identity", "x-directpipe-tenant"},
		},
		{
			name: "no route matched loses spoofed identity too", config: routedConfig(t), routeFound: false,
			headers: map[string]string{":path": "/nowhere", "x-directpipe-identity": "admin"},
			action:  Continue,
			absent:  []string{"x-directpipe-identity"},
		},
		{
			name: "public request without spoofed headers is not edited", config: routedConfig(t), route: "public", routeFound: true,
			headers: map[string]string{":path": "/"},
			prepare: func(h *fakeHost) { h.errRemove = errors.New("no edit expected") },
			action:  Continue,
		},
		{
			// Regression (issue 11): Envoy matches an edited request again;
			// the marker pins it to the route that was checked.
			name: "edited request carries the route marker", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good},
			action:  Continue,
			set:     map[string]string{"x-directpipe-route": "voice"},
		},
		{
			name: "public request stripped of a spoofed header carries the marker", config: routedConfig(t), route: "public", routeFound: true,
			headers: map[string]string{":path": "/", "x-directpipe-identity": "admin"},
			action:  Continue,
			set:     map[string]string{"x-directpipe-route": "public"},
			absent:  []string{"x-directpipe-identity"},
		},
		{
			name: "unedited public request gets no marker", config: routedConfig(t), route: "public", routeFound: true,
			headers: map[string]string{":path": "/"},
			action:  Continue,
			absent:  []string{"x-directpipe-route"},
		},
		{
			name: "missing token", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a"},
			action:  Pause, status: 401, reason: "missing_token",
		},
		{
			name: "bad signature", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good[:len(good)-4] + "AAAA"},
			action:  Pause, status: 401, reason: "bad_signature",
		},
		{
			name: "missing scope", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + noScope},
			action:  Pause, status: 403, reason: "insufficient_scope",
		},
		{
			name: "unnamed route is not the no-route case", config: routedConfig(t), route: "", routeFound: true,
			headers: map[string]string{":path": "/v1/a"},
			action:  Pause, status: 403, reason: "route_not_configured",
		},
		{
			name: "unknown route", config: routedConfig(t), route: "new", routeFound: true,
			headers: map[string]string{":path": "/v1/a"},
			action:  Pause, status: 403, reason: "route_not_configured",
		},
		// Routes that carry their policy in their metadata, as the
		// control plane's do: the filter config holds no route map.
		{
			name: "tagged route: token allowed", config: policiesConfig(t), route: "voice", routeFound: true, prepare: tagged("voice"),
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good, "x-directpipe-identity": "mallory"},
			action:  Continue,
			set:     map[string]string{"x-directpipe-identity": "alice", "x-directpipe-route": "voice"},
			absent:  []string{"authorization"},
		},
		{
			name: "tagged route: missing token", config: policiesConfig(t), route: "voice", routeFound: true, prepare: tagged("voice"),
			headers: map[string]string{":path": "/v1/a"},
			action:  Pause, status: 401, reason: "missing_token",
		},
		{
			name: "route tagged public loses spoofed identity", config: policiesConfig(t), route: "health", routeFound: true, prepare: tagged(""),
			headers: map[string]string{":path": "/", "x-directpipe-identity": "admin", "authorization": "Bearer whatever"},
			action:  Continue,
			set:     map[string]string{"authorization": "Bearer whatever", "x-directpipe-route": "health"},
			absent:  []string{"x-directpipe-identity"},
		},
		{
			// RDS may bring a route before ECDS brings its new policy.
			name: "tagged route naming a policy not configured yet fails closed", config: policiesConfig(t), route: "voice2", routeFound: true, prepare: tagged("voice2"),
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good},
			action:  Pause, status: 403, reason: "route_not_configured",
		},
		{
			// The control plane tags only routes with auth.
			name: "untagged route without a route map is public", config: policiesConfig(t), route: "api", routeFound: true,
			headers: map[string]string{":path": "/", "x-directpipe-identity": "admin", "authorization": "Bearer whatever"},
			action:  Continue,
			set:     map[string]string{"authorization": "Bearer whatever", "x-directpipe-route": "api"},
			absent:  []string{"x-directpipe-identity"},
		},
		{
			name: "the metadata wins over the route map", config: routedConfig(t), route: "public", routeFound: true, prepare: tagged("voice"),
			headers: map[string]string{":path": "/v1/a"},
			action:  Pause, status: 401, reason: "missing_token",
		},
		{
			name: "unconfigured plugin", route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good},
			action:  Pause, status: 503, reason: "filter_not_configured",
		},
		{
			name: "host refuses to strip the token", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good},
			prepare: func(h *fakeHost) { h.errRemove = errors.New("refused") },
			action:  Pause, status: 500, reason: "internal_error",
		},
		{
			name: "host refuses to set identity", config: routedConfig(t), route: "voice", routeFound: true,
			headers: map[string]string{":path": "/v1/a", "authorization": "Bearer " + good},
			prepare: func(h *fakeHost) { h.errReplace = errors.New("refused") },
			action:  Pause, status: 500, reason: "internal_error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewHTTP()
			if tt.config != "" && !g.Configure(newFakeHost(tt.config), rootID) {
				t.Fatal("configuration refused")
			}
			g.ContextCreate(streamID, rootID)
			h := newFakeHost("")
			h.route, h.routeFound = tt.route, tt.routeFound
			for k, v := range tt.headers {
				h.headers[k] = v
			}
			if tt.prepare != nil {
				tt.prepare(h)
			}
			if a := g.RequestHeaders(h, streamID, now); a != tt.action {
				t.Fatalf("action %d, want %d (local reply %+v, logs %q)", a, tt.action, h.local, h.logs)
			}
			if tt.status == 0 {
				if h.local != nil {
					t.Fatalf("unexpected local reply %+v", h.local)
				}
				for k, v := range tt.set {
					if h.headers[k] != v {
						t.Errorf("header %s = %q, want %q", k, h.headers[k], v)
					}
				}
				for _, k := range tt.absent {
					if _, ok := h.headers[k]; ok {
						t.Errorf("header %s was forwarded", k)
					}
				}
				return
			}
			checkLocalReply(t, h, tt.status, tt.reason)
			if h.counts[contract.MetricDeniedPrefix+tt.reason] != 1 {
				t.Errorf("counts %v, want one %s", h.counts, tt.reason)
			}
		})
	}
}

// checkLocalReply asserts a denial's status, details, body and challenge,
// and that the token is in none of them.
func checkLocalReply(t *testing.T, h *fakeHost, status int, reason string) {
	t.Helper()
	r := h.local
	if r == nil {
		t.Fatal("no local reply")
	}
	if r.status != status || r.details != "directpipe_"+reason || !strings.Contains(r.body, `"error":"`+reason+`"`) {
		t.Errorf("local reply %+v, want %d %s", r, status, reason)
	}
	if r.headers["content-type"] != "application/json" {
		t.Errorf("content-type %q", r.headers["content-type"])
	}
	challenge, ok := r.headers["www-authenticate"]
	if want := status == 401 || reason == "insufficient_scope"; ok != want {
		t.Errorf("www-authenticate %q present %v, want %v", challenge, ok, want)
	}
	if auth := h.headers["authorization"]; auth != "" && strings.Contains(r.body+r.details+challenge, strings.TrimPrefix(auth, "Bearer ")) {
		t.Error("the token is in the reply")
	}
}

// TestHTTPAllowedCount: only a check by a policy counts as allowed; a
// public route is not a handshake the module decided.
func TestHTTPAllowedCount(t *testing.T) {
	g := NewHTTP()
	if !g.Configure(newFakeHost(routedConfig(t)), rootID) {
		t.Fatal("configuration refused")
	}
	g.ContextCreate(streamID, rootID)
	g.ContextCreate(streamID+1, rootID)
	h := newFakeHost("")
	h.route, h.routeFound = "voice", true
	h.headers["authorization"] = "Bearer " + token(t, goodClaims())
	g.RequestHeaders(h, streamID, now)
	h.route = "public"
	g.RequestHeaders(h, streamID+1, now)
	if h.counts[contract.MetricAllowed] != 1 {
		t.Fatalf("allowed counted %d times, want 1", h.counts[contract.MetricAllowed])
	}
}

// TestHTTPDelete: a deleted plugin's streams are unconfigured, and a
// deleted stream is forgotten.
func TestHTTPDelete(t *testing.T) {
	g := NewHTTP()
	g.Configure(newFakeHost(routedConfig(t)), rootID)
	g.ContextCreate(streamID, rootID)
	h := newFakeHost("")
	g.Delete(h, streamID)
	if len(g.streams) != 0 {
		t.Fatalf("stream kept after delete: %v", g.streams)
	}
	g.Delete(h, rootID)
	g.ContextCreate(streamID, rootID)
	h.route, h.routeFound = "public", true
	if g.RequestHeaders(h, streamID, now); h.local == nil || h.local.status != 503 {
		t.Fatalf("stream of a deleted plugin: %+v", h.local)
	}
}

// TestHTTPTokenCacheCounters: a repeated token is a cache hit, and both
// outcomes are counted.
func TestHTTPTokenCacheCounters(t *testing.T) {
	g := NewHTTP()
	if !g.Configure(newFakeHost(routedConfig(t)), rootID) {
		t.Fatal("configuration refused")
	}
	good := token(t, goodClaims())
	h := newFakeHost("")
	for i := range 3 {
		g.ContextCreate(streamID+uint32(i), rootID)
		h.route, h.routeFound = "voice", true
		h.headers = map[string]string{":path": "/v1/a", "authorization": "Bearer " + good}
		if a := g.RequestHeaders(h, streamID+uint32(i), now); a != Continue {
			t.Fatalf("handshake %d: action %d, local reply %+v", i, a, h.local)
		}
	}
	if h.counts[contract.MetricTokenCacheMisses] != 1 || h.counts[contract.MetricTokenCacheHits] != 2 {
		t.Errorf("counts %v, want 1 miss and 2 hits", h.counts)
	}
}

// tracingHost is a fakeHost that is also a Tracer: it records the names
// of the headers the check looked up.
type tracingHost struct {
	*fakeHost
	reads []string
}

func (h *tracingHost) HeaderRead(name, _ string, _ bool) { h.reads = append(h.reads, name) }

func (h *tracingHost) Allowed(auth.Decision, *auth.Policy) {}

// TestHTTPPublicRouteReadsNoPath: a host keying allows on the headers the
// check read (the native build's verdict table) sees :path read only
// where a policy takes a token from the query; a public route's check
// reads only the identity and claim headers it strips.
func TestHTTPPublicRouteReadsNoPath(t *testing.T) {
	for _, tt := range []struct {
		name     string
		config   string
		route    string
		prepare  func(*fakeHost)
		readPath bool
	}{
		{"a public route of the route map", routedConfig(t), "public", nil, false},
		{"a route tagged public", policiesConfig(t), "api", tagged(""), false},
		{"a route with no tag", policiesConfig(t), "api", nil, false},
		{"a policy with a query token source", routedConfig(t), "voice", nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			g := NewHTTP()
			if !g.Configure(newFakeHost(tt.config), rootID) {
				t.Fatal("configuration refused")
			}
			g.ContextCreate(streamID, rootID)
			h := &tracingHost{fakeHost: newFakeHost("")}
			h.route, h.routeFound = tt.route, true
			h.headers[":path"] = "/v1/a?access_token=" + token(t, goodClaims())
			if tt.prepare != nil {
				tt.prepare(h.fakeHost)
			}
			if a := g.RequestHeaders(h, streamID, now); a != Continue {
				t.Fatalf("action %v, local reply %+v", a, h.local)
			}
			if got := slices.Contains(h.reads, ":path"); got != tt.readPath {
				t.Errorf(":path read: %v, want %v (reads %v)", got, tt.readPath, h.reads)
			}
			if !tt.readPath {
				for _, name := range h.reads {
					if !strings.HasPrefix(name, "x-directpipe-") {
						t.Errorf("a public check read %s", name)
					}
				}
			}
		})
	}
}
