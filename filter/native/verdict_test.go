//go:build cgo

package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// cachedAllow is the record of an allow from the token cache on route
// "voice" (policy tag "demo"): what the check read, the edits it made.
func cachedAllow() *verdictRecord {
	return &verdictRecord{
		reads: []verdictRead{
			{name: ":path", value: "/v1/voice", present: true},
			{name: "origin"},
			{name: "authorization", value: "Bearer tok-1", present: true},
			{name: "x-directpipe-identity"},
		},
		edits: []verdictEdit{
			{name: "authorization", remove: true},
			{name: "x-directpipe-identity", value: "caller-1"},
			{name: "x-directpipe-route", value: "voice"},
		},
		counters: []verdictCount{{id: 3, n: 1}, {id: 0, n: 1}},
		route:    "voice", routeOK: true, routeRead: true,
		tag: "demo", tagOK: true, tagRead: true,
		allowed: true, policy: &auth.Policy{},
		d: auth.Decision{Allow: true, Cache: auth.CacheHit, Until: time.Now().Add(time.Minute)},
	}
}

// publicAllow is the record of an allow on public route "lobby" (no
// policy tag, as the control plane sends a public route): the check read only the identity and claim
// headers it strips, found a spoofed identity, removed it and set the
// route marker.
func publicAllow() *verdictRecord {
	return &verdictRecord{
		reads: []verdictRead{
			{name: "x-directpipe-identity", value: "admin", present: true},
			{name: "x-directpipe-tenant"},
		},
		edits: []verdictEdit{
			{name: "x-directpipe-identity", remove: true},
			{name: "x-directpipe-route", value: "lobby"},
		},
		route: "lobby", routeOK: true, routeRead: true,
		tagRead: true,
		allowed: true,
		d:       auth.Decision{Allow: true, Remove: []string{"x-directpipe-identity", "x-directpipe-tenant"}},
	}
}

func publicPolicy() *auth.Policy {
	return &auth.Policy{Policy: contract.Policy{Name: "lobby", Public: true}}
}

// request is the request cachedAllow was decided on.
func request() [][2]string {
	return [][2]string{
		{":method", "GET"}, {":path", "/v1/voice"}, {":authority", "example"},
		{"upgrade", "websocket"}, {"sec-websocket-key", "abc"}, {"authorization", "Bearer tok-1"},
	}
}

var (
	voice = testRoute{"voice", true}
	demo  = testRoute{"demo", true}
)

// A headerEdit changes a request's headers for a lookup.
type headerEdit func([][2]string) [][2]string

func set(name, value string) headerEdit {
	return func(h [][2]string) [][2]string {
		for i := range h {
			if h[i][0] == name {
				h[i][1] = value
			}
		}
		return h
	}
}

func add(name, value string) headerEdit {
	return func(h [][2]string) [][2]string { return append(h, [2]string{name, value}) }
}

func drop(name string) headerEdit {
	return func(h [][2]string) [][2]string {
		return slices.DeleteFunc(h, func(kv [2]string) bool { return kv[0] == name })
	}
}

// TestVerdictTableFind looks requests up in a C table holding
// cachedAllow: only a request that gives every recorded read the same
// value (or absence), on the same route and tag, before both deadlines,
// is replayed.
func TestVerdictTableFind(t *testing.T) {
	const mono, real = int64(1_000), int64(2_000)
	with := func(edit headerEdit) [][2]string { return edit(request()) }
	cases := []struct {
		name       string
		headers    [][2]string
		route, tag testRoute
		mono, real int64
		hit        bool
	}{
		{"the same request", request(), voice, demo, mono, real, true},
		{"a header the check did not read differs", with(set("sec-websocket-key", "xyz")), voice, demo, mono, real, true},
		{"a header the check did not read is added", with(add("user-agent", "x")), voice, demo, mono, real, true},
		{"names compare as Go's lookup does", with(func(h [][2]string) [][2]string {
			return add("Authorization", "Bearer tok-1")(drop("authorization")(h))
		}), voice, demo, mono, real, true},
		{"another token", with(set("authorization", "Bearer tok-2")), voice, demo, mono, real, false},
		{"a token one byte longer", with(set("authorization", "Bearer tok-1 ")), voice, demo, mono, real, false},
		{"no token", with(drop("authorization")), voice, demo, mono, real, false},
		{"a second token", with(add("authorization", "Bearer tok-1")), voice, demo, mono, real, false},
		{"a spoofed identity", with(add("x-directpipe-identity", "admin")), voice, demo, mono, real, false},
		{"an origin", with(add("origin", "http://evil.example")), voice, demo, mono, real, false},
		{"another path", with(set(":path", "/v1/voice?x=1")), voice, demo, mono, real, false},
		{"a header name past ASCII", with(add("x-directpipe-\u212aey", "v")), voice, demo, mono, real, false},
		{"another route", request(), testRoute{"voice2", true}, demo, mono, real, false},
		{"no route", request(), testRoute{}, demo, mono, real, false},
		{"another policy tag", request(), voice, testRoute{"strict", true}, mono, real, false},
		{"no policy tag", request(), voice, testRoute{}, mono, real, false},
		{"at the monotonic deadline", request(), voice, demo, 5_000, real, false},
		{"at the wall-clock deadline", request(), voice, demo, mono, 6_000, false},
		{"no headers", nil, voice, demo, mono, real, false},
	}
	tab := newTestTable()
	defer tab.free()
	if !tab.insert(cachedAllow(), 5_000, 6_000) {
		t.Fatal("the record does not fit an entry")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			edits, hit := tab.find(c.headers, c.route, c.tag, c.mono, c.real)
			if hit != c.hit {
				t.Fatalf("hit = %v, want %v", hit, c.hit)
			}
			if hit && !slices.Equal(edits, cachedAllow().edits) {
				t.Errorf("edits %v, want %v", edits, cachedAllow().edits)
			}
		})
	}
}

// TestVerdictTablePublic looks requests up in a C table holding
// publicAllow beside cachedAllow: a public entry is keyed on the headers
// its check read (here a spoofed identity and no tenant header), its
// route and its tag, and on nothing else, the path included.
func TestVerdictTablePublic(t *testing.T) {
	const mono, real = int64(1_000), int64(2_000)
	lobby, public := testRoute{"lobby", true}, testRoute{}
	with := func(edit headerEdit) [][2]string {
		return edit([][2]string{
			{":method", "GET"}, {":path", "/v1/lobby"}, {":authority", "example"},
			{"upgrade", "websocket"}, {"x-directpipe-identity", "admin"},
		})
	}
	same := func(h [][2]string) [][2]string { return h }
	cases := []struct {
		name       string
		headers    [][2]string
		route, tag testRoute
		hit        bool
	}{
		{"the same request", with(same), lobby, public, true},
		{"another path and query", with(set(":path", "/v1/lobby?room=7")), lobby, public, true},
		{"a token the check did not read", with(add("authorization", "Bearer x")), lobby, public, true},
		{"another spoofed identity", with(set("x-directpipe-identity", "root")), lobby, public, false},
		{"no spoofed identity", with(drop("x-directpipe-identity")), lobby, public, false},
		{"a claim header the check saw absent", with(add("x-directpipe-tenant", "acme")), lobby, public, false},
		{"another route", with(same), testRoute{"lobby2", true}, public, false},
		{"a guarded route's name", with(same), voice, public, false},
		{"no route", with(same), testRoute{}, public, false},
		{"a policy tag", with(same), lobby, demo, false},
		{"an empty policy tag", with(same), lobby, testRoute{"", true}, false},
	}
	tab := newTestTable()
	defer tab.free()
	if !tab.insert(cachedAllow(), 5_000, 6_000) || !tab.insert(publicAllow(), 5_000, 6_000) {
		t.Fatal("a record does not fit an entry")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			edits, hit := tab.find(c.headers, c.route, c.tag, mono, real)
			if hit != c.hit {
				t.Fatalf("hit = %v, want %v", hit, c.hit)
			}
			if hit && !slices.Equal(edits, publicAllow().edits) {
				t.Errorf("edits %v, want %v", edits, publicAllow().edits)
			}
		})
	}
}

// TestVerdictTableBounds: the table holds at most its number of entries,
// an entry at most its bytes, and an entry with the same inputs replaces
// the old one rather than adding a second.
func TestVerdictTableBounds(t *testing.T) {
	tab := newTestTable()
	defer tab.free()
	const far = int64(1) << 62
	for range 3 {
		tab.insert(cachedAllow(), far, far)
	}
	if n := tab.entries(); n != 1 {
		t.Fatalf("the same inputs three times: %d entries, want 1", n)
	}
	for i := range 100 {
		r := cachedAllow()
		r.reads[2].value = "Bearer tok-" + strings.Repeat("x", i)
		tab.insert(r, far, far)
	}
	if n := tab.entries(); n != 32 {
		t.Fatalf("%d entries after 101 inserts, want the bound, 32", n)
	}
	last := request()
	last[5][1] = "Bearer tok-" + strings.Repeat("x", 99)
	if _, hit := tab.find(last, voice, demo, 0, 0); !hit {
		t.Error("the newest entry was evicted")
	}
	big := cachedAllow()
	big.reads[2].value = strings.Repeat("x", 4096)
	if tab.insert(big, far, far) {
		t.Error("a record past an entry's bytes was stored")
	}
}

// TestVerdictReplayable: only an allow from the token cache, with an end,
// or an allow on a public route, on a check that read its route and tag
// and used nothing the table cannot key on, is stored: until its end, or
// for a public allow for publicVerdictFor.
func TestVerdictReplayable(t *testing.T) {
	now := time.Now()
	cases := []struct {
		name   string
		record func() *verdictRecord
		edit   func(*verdictRecord)
		want   bool
	}{
		{"an allow from the token cache", cachedAllow, func(*verdictRecord) {}, true},
		{"used the client address, shared data or the node id", cachedAllow, func(r *verdictRecord) { r.unkeyed = true }, false},
		{"refused", cachedAllow, func(r *verdictRecord) { r.allowed = false }, false},
		{"a token checked now", cachedAllow, func(r *verdictRecord) { r.d.Cache = auth.CacheMiss }, false},
		{"an API key", cachedAllow, func(r *verdictRecord) { r.d.Cache = auth.CacheNone }, true},
		{"an API key with the token cache off (no end)", cachedAllow, func(r *verdictRecord) { r.d.Cache, r.d.Until = auth.CacheNone, time.Time{} }, false},
		{"no end", cachedAllow, func(r *verdictRecord) { r.d.Until = time.Time{} }, false},
		{"route not read", cachedAllow, func(r *verdictRecord) { r.routeRead = false }, false},
		{"tag not read", cachedAllow, func(r *verdictRecord) { r.tagRead = false }, false},
		{"a name past ASCII read", cachedAllow, func(r *verdictRecord) { r.reads = append(r.reads, verdictRead{name: "\u212a"}) }, false},
		{"a public route (no policy)", publicAllow, func(*verdictRecord) {}, true},
		{"a public policy", publicAllow, func(r *verdictRecord) { r.policy = publicPolicy() }, true},
		{"a public policy counting allows", publicAllow, func(r *verdictRecord) {
			r.policy = publicPolicy()
			r.counters = []verdictCount{{id: 0, n: 1}}
		}, true},
		{"a public route, client address or shared data used", publicAllow, func(r *verdictRecord) { r.unkeyed = true }, false},
		{"a public policy, client address or shared data used", publicAllow, func(r *verdictRecord) {
			r.policy = publicPolicy()
			r.unkeyed = true
		}, false},
		{"a public route refused", publicAllow, func(r *verdictRecord) { r.allowed = false }, false},
		{"a public route, route not read", publicAllow, func(r *verdictRecord) { r.routeRead = false }, false},
		{"a public route, tag not read", publicAllow, func(r *verdictRecord) { r.tagRead = false }, false},
		{"a public route, a name past ASCII read", publicAllow, func(r *verdictRecord) { r.reads = append(r.reads, verdictRead{name: "\u212a"}) }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.record()
			c.edit(r)
			until, got := r.replayUntil(now)
			if got != c.want {
				t.Fatalf("replayable = %v, want %v", got, c.want)
			}
			if !got {
				return
			}
			if r.policy == nil || r.policy.Public {
				if left := until.Sub(now); left <= 0 || left > time.Minute {
					t.Errorf("a public allow replayed for %v, want at most a minute", left)
				}
			} else if !until.Equal(r.d.Until) {
				t.Errorf("until %v, want the decision's %v", until, r.d.Until)
			}
		})
	}
}
