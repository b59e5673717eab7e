//go:build cgo

package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
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

// TestVerdictTableFind looks requests up in a C table holding
// cachedAllow: only a request that gives every recorded read the same
// value (or absence), on the same route and tag, before both deadlines,
// is replayed.
func TestVerdictTableFind(t *testing.T) {
	const mono, real = int64(1_000), int64(2_000)
	with := func(edit func([][2]string) [][2]string) [][2]string { return edit(request()) }
	set := func(name, value string) func([][2]string) [][2]string {
		return func(h [][2]string) [][2]string {
			for i := range h {
				if h[i][0] == name {
					h[i][1] = value
				}
			}
			return h
		}
	}
	add := func(name, value string) func([][2]string) [][2]string {
		return func(h [][2]string) [][2]string { return append(h, [2]string{name, value}) }
	}
	drop := func(name string) func([][2]string) [][2]string {
		return func(h [][2]string) [][2]string {
			return slices.DeleteFunc(h, func(kv [2]string) bool { return kv[0] == name })
		}
	}
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
// of a policy that checks a token, on a check that read its route and tag
// and used nothing the table cannot key on, is stored.
func TestVerdictReplayable(t *testing.T) {
	cases := []struct {
		name string
		edit func(*verdictRecord)
		want bool
	}{
		{"an allow from the token cache", func(*verdictRecord) {}, true},
		{"used the client address, shared data or the node id", func(r *verdictRecord) { r.unkeyed = true }, false},
		{"refused", func(r *verdictRecord) { r.allowed = false }, false},
		{"no policy", func(r *verdictRecord) { r.policy = nil }, false},
		{"a public policy", func(r *verdictRecord) { r.policy.Public = true }, false},
		{"a token checked now", func(r *verdictRecord) { r.d.Cache = auth.CacheMiss }, false},
		{"an API key", func(r *verdictRecord) { r.d.Cache = auth.CacheNone }, true},
		{"an API key with the token cache off (no end)", func(r *verdictRecord) { r.d.Cache, r.d.Until = auth.CacheNone, time.Time{} }, false},
		{"no end", func(r *verdictRecord) { r.d.Until = time.Time{} }, false},
		{"route not read", func(r *verdictRecord) { r.routeRead = false }, false},
		{"tag not read", func(r *verdictRecord) { r.tagRead = false }, false},
		{"a name past ASCII read", func(r *verdictRecord) { r.reads = append(r.reads, verdictRead{name: "\u212a"}) }, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := cachedAllow()
			c.edit(r)
			if got := r.replayable(); got != c.want {
				t.Errorf("replayable = %v, want %v", got, c.want)
			}
		})
	}
}
