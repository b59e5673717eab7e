package main

// #include <stdlib.h>
// #include "verdict.h"
import "C"

import (
	"time"
	"unsafe"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/gate"
)

// A verdict the Go check gives is stored in the worker's C table
// (verdict.h) only when replaying it is the same as checking again: an
// allow from the token cache or of an API key, or on a public route, of a
// policy with no stream quota, rate or client address list (nothing but
// the request's headers, its route and the time decided it), that made
// only header edits and counts. The entry is keyed on every input the
// check read: the route's name and policy tag as Envoy gave them, and
// each request header it looked up, with the value it saw or its
// absence. It lasts no longer than auth.Decision.Until: the token cache
// entry that decided it (the token's exp and the cache's maximum age), or
// for an API key the cache's maximum age; a public allow, which nothing
// in it ends, lasts publicVerdictFor. The table belongs to one filter
// config; every policy change, key rotation or key revocation is a new
// config, whose tables start empty.

// verdictReplays counts the handshakes a worker's table answered without
// entering Go (dynamicmodulescustom.directpipe_verdict_replays).
const verdictReplays = "directpipe_verdict_replays"

// publicVerdictFor is how long an allow on a public route is replayed.
// Nothing in such an allow expires: it reads no key or token. A route
// given a policy arrives with a policy tag, on which entries are keyed,
// and any change of policies is a new filter config, whose tables start
// empty. The bound is for safety only: should what decides a public
// route ever change without either, a stale allow outlives it by no more
// than this.
const publicVerdictFor = time.Minute

// verdictRecord is what one run of the check read and did, as the host
// saw it.
type verdictRecord struct {
	reads    []verdictRead
	edits    []verdictEdit
	counters []verdictCount

	route, tag         string
	routeOK, tagOK     bool
	routeRead, tagRead bool

	allowed bool
	d       auth.Decision
	policy  *auth.Policy

	// unkeyed is set when the check used something the table cannot key
	// on or replay: the client's address, shared data (quotas, rates),
	// gauges, the node id, a signature check, a labelled counter, a
	// local reply.
	unkeyed bool
}

type verdictRead struct {
	name, value string
	present     bool
}

type verdictEdit struct {
	name, value string
	remove      bool
}

type verdictCount struct {
	id C.size_t
	n  uint64
}

var _ gate.Tracer = (*host)(nil)

func (h *host) HeaderRead(name, value string, present bool) {
	if h.rec != nil {
		h.rec.reads = append(h.rec.reads, verdictRead{name, value, present})
	}
}

func (h *host) Allowed(d auth.Decision, p *auth.Policy) {
	if h.rec != nil {
		h.rec.allowed, h.rec.d, h.rec.policy = true, d, p
	}
}

// unkeyed marks the running check as one the table must not store.
func (h *host) unkeyed() {
	if h.rec != nil {
		h.rec.unkeyed = true
	}
}

// replayUntil reports whether the recorded check, run at now, may be
// replayed from its reads, and until when.
func (r *verdictRecord) replayUntil(now time.Time) (time.Time, bool) {
	if r.unkeyed || !r.allowed || !r.routeRead || !r.tagRead {
		return time.Time{}, false
	}
	for _, rd := range r.reads {
		for i := 0; i < len(rd.name); i++ {
			// The C table compares names as ASCII; Go's EqualFold also
			// folds some non-ASCII letters onto ASCII ones.
			if rd.name[i] >= 0x80 {
				return time.Time{}, false
			}
		}
	}
	// An allow with no policy is a public route's (auth.Config.Check).
	if r.policy == nil || r.policy.Public {
		return now.Add(publicVerdictFor), true
	}
	// A JWT just verified (CacheMiss) is stored at its next handshake,
	// from the token cache, whose counters a replay then repeats.
	if r.d.Until.IsZero() || r.d.Cache == auth.CacheMiss {
		return time.Time{}, false
	}
	return r.d.Until, true
}

// store puts the recorded check in t if it may be replayed; the C table
// takes the entry, or it is freed here.
// mono is the monotonic clock (dp_verdict_mono_now) read no later than
// now, the time the check ran at.
func (r *verdictRecord) store(t *C.dp_verdict_table, mono C.int64_t, now time.Time) {
	if t == nil {
		return
	}
	until, ok := r.replayUntil(now)
	left := until.Sub(now)
	if !ok || left <= 0 {
		return
	}
	v := C.dp_verdict_new()
	if v == nil {
		return
	}
	if !r.fill(v) {
		C.free(unsafe.Pointer(v))
		return
	}
	C.dp_verdict_set_deadlines(v, mono+C.int64_t(left.Nanoseconds()), C.int64_t(until.UnixNano()))
	C.dp_verdict_insert(t, v)
}

// fill copies the record into v; false when it does not fit the entry's
// bounds.
func (r *verdictRecord) fill(v *C.dp_verdict) bool {
	if !C.dp_verdict_set_route(v, buffer(r.route), C.bool(r.routeOK)) || !C.dp_verdict_set_tag(v, buffer(r.tag), C.bool(r.tagOK)) {
		return false
	}
	for _, rd := range r.reads {
		if !C.dp_verdict_add_read(v, buffer(rd.name), buffer(rd.value), C.bool(rd.present)) {
			return false
		}
	}
	for _, e := range r.edits {
		if !C.dp_verdict_add_edit(v, buffer(e.name), buffer(e.value), C.bool(e.remove)) {
			return false
		}
	}
	for _, c := range r.counters {
		if !C.dp_verdict_add_counter(v, c.id, C.uint64_t(c.n)) {
			return false
		}
	}
	return true
}
