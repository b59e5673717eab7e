package main

// #include "dp_abi.h"
import "C"

import (
	"errors"
	"strconv"
	"sync"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/gate"
)

// host binds gate.HTTPHost to the dynamic-module ABI for one worker's
// gate: filter is the stream whose callback is running (0 outside one), so
// the gate's calls act on it, as Proxy-Wasm's act on the current context.
type host struct {
	cfg    *filterConfig
	filter C.uintptr_t
	// rec records what the running handshake check reads and does, for
	// the worker's verdict table (verdict.go); nil outside one.
	rec *verdictRecord
	// ending is the stream Envoy is destroying, while the gate gives back
	// its quota: only stats are set through it.
	ending C.uintptr_t
}

var _ gate.HTTPHost = (*host)(nil)

// Envoy's log levels, as the ABI numbers them.
var logLevels = map[gate.Level]C.int{gate.LevelDebug: 1, gate.LevelInfo: 2, gate.LevelWarn: 3, gate.LevelError: 4}

func (h *host) Log(level gate.Level, msg string) { log(logLevels[level], msg) }

func (h *host) PluginConfiguration() ([]byte, error) { return h.cfg.raw, nil }

// DefineCounter defines a counter while Envoy creates the configuration;
// Envoy freezes a configuration's stats after that, so a counter first
// named later (a quota refusal's per-identity counter) is not counted.
func (h *host) DefineCounter(name string) {
	c := h.cfg
	if c.envoy == 0 {
		return
	}
	if _, ok := c.counters[name]; ok {
		return
	}
	var id C.size_t
	if C.dp_define_counter(c.envoy, buffer(name), &id) == 0 {
		c.counters[name] = id
	}
}

// Count adds 1 to a counter; a quota refusal's per-identity counter goes
// to the labelled counter of its reason (see stats.go).
func (h *host) Count(name string) {
	if id, labels, ok := h.cfg.stats.refusalCounter(name); ok {
		h.unkeyed()
		if h.filter != 0 {
			incrementCounter(h.filter, id, labels)
		}
		return
	}
	h.AddCount(name, 1)
}

// AddCount adds n to a counter defined with the configuration.
func (h *host) AddCount(name string, n uint64) {
	id, ok := h.cfg.counters[name]
	if !ok || h.filter == 0 || n == 0 {
		return
	}
	if h.rec != nil {
		h.rec.counters = append(h.rec.counters, verdictCount{id, n})
	}
	C.dp_increment_counter(h.filter, id, C.uint64_t(n))
}

// AddGauge adds delta to one of the gate's per-identity live-stream
// gauges, and sets Envoy's labelled gauge to the result (see stats.go).
func (h *host) AddGauge(name string, delta int64) {
	h.unkeyed()
	through := h.filter
	if through == 0 {
		through = h.ending
	}
	var publish func(int64)
	if id, labels, ok := h.cfg.stats.liveGauge(name); ok && through != 0 {
		publish = func(v int64) { setGauge(through, id, labels, v) }
	}
	gauges.add(name, delta, publish)
}

// NodeID is the node id Envoy was started with (see nodeid.go); when it
// cannot be read, quotas split by use give this Envoy the rest share the
// control plane sets for Envoys it does not name: never more than its
// share.
func (h *host) NodeID() (string, error) {
	h.unkeyed()
	return processNodeID()
}

// errNoHostCrypto makes the auth core check RS* and ES* signatures
// itself: in a native module that is Go's own crypto, without a VM in
// between, so there is no faster host to hand them to. They count as
// directpipe_signature_host_unavailable.
var errNoHostCrypto = errors.New("the native module checks signatures itself")

func (h *host) VerifySignature(hash string, spki, sig, signed []byte) (bool, error) {
	h.unkeyed()
	return false, errNoHostCrypto
}

// ClientAddress is the source.address attribute, as Proxy-Wasm's
// property: the downstream remote address ("ip:port"), taken from
// X-Forwarded-For when the listener trusts hops in front of it.
func (h *host) ClientAddress() (string, error) {
	h.unkeyed()
	if h.filter == 0 {
		return "", errNoStream
	}
	v, ok := attribute(h.filter, C.dp_attr_source_address)
	if !ok {
		return "", errors.New("source.address is not available")
	}
	return v, nil
}

func (h *host) RequestHeaders() ([][2]string, error) {
	if h.filter == 0 {
		return nil, errNoStream
	}
	pairs, ok := requestHeaders(h.filter)
	if !ok {
		return nil, errors.New("reading the request headers failed (none, or more than " + strconv.Itoa(maxHeaders) + ")")
	}
	return pairs, nil
}

// RouteName reads xds.route_name: false when no route matched.
func (h *host) RouteName() (string, bool) {
	if h.filter == 0 {
		return "", false
	}
	name, ok := attribute(h.filter, C.dp_attr_xds_route_name)
	if h.rec != nil {
		h.rec.route, h.rec.routeOK, h.rec.routeRead = name, ok, true
	}
	return name, ok
}

// RoutePolicy reads the route's auth setting from its filter metadata.
func (h *host) RoutePolicy() (string, bool) {
	if h.filter == 0 {
		return "", false
	}
	tag, ok := routeMetadata(h.filter, contract.RouteMetadataNamespace, contract.RouteMetadataPolicy)
	if h.rec != nil {
		h.rec.tag, h.rec.tagOK, h.rec.tagRead = tag, ok, true
	}
	return tag, ok
}

func (h *host) RemoveRequestHeader(name string) error {
	return h.setHeader(name, "", true)
}

func (h *host) ReplaceRequestHeader(name, value string) error {
	return h.setHeader(name, value, false)
}

func (h *host) setHeader(name, value string, remove bool) error {
	if h.filter == 0 {
		return errNoStream
	}
	if h.rec != nil {
		h.rec.edits = append(h.rec.edits, verdictEdit{name, value, remove})
	}
	if !setRequestHeader(h.filter, name, value, remove) {
		h.unkeyed()
		return errors.New("setting request header " + strconv.Quote(name) + " failed")
	}
	return nil
}

func (h *host) SendLocalResponse(status int, details string, body []byte, headers [][2]string) error {
	h.unkeyed()
	if h.filter == 0 {
		return errNoStream
	}
	if !sendResponse(h.filter, status, details, body, headers) {
		return errors.New("sending the local reply failed")
	}
	return nil
}

func (h *host) SharedData(key string) ([]byte, uint32, error) {
	h.unkeyed()
	return shared.get(key)
}

func (h *host) SetSharedData(key string, value []byte, cas uint32) (bool, error) {
	h.unkeyed()
	return shared.set(key, value, cas), nil
}

// shared is what Proxy-Wasm calls shared data: entries every worker reads
// and writes with compare-and-swap, here for the whole process. The gate
// keeps its per-identity stream counts and rate buckets in it, so a quota
// is per Envoy, as with the Wasm module.
var shared = &sharedData{entries: map[string]sharedEntry{}}

type sharedEntry struct {
	value []byte
	cas   uint32
}

type sharedData struct {
	mu      sync.Mutex
	entries map[string]sharedEntry
}

// absentCAS is the token of an entry that does not exist: a write with
// it succeeds only while the entry is still absent, so two workers
// creating the same entry at once cannot both succeed. (Proxy-Wasm gives
// an absent entry token 0, which writes whatever is there.)
const absentCAS = ^uint32(0)

func (s *sharedData) get(key string) ([]byte, uint32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	if !ok {
		return nil, absentCAS, nil
	}
	return append([]byte(nil), e.value...), e.cas, nil
}

// set writes the entry if its token is still cas (0: write anyway), and
// gives it a new token.
func (s *sharedData) set(key string, value []byte, cas uint32) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[key]
	switch {
	case cas == 0:
	case !ok && cas != absentCAS, ok && cas != e.cas:
		return false
	}
	next := e.cas + 1
	if next == 0 || next == absentCAS {
		next = 1
	}
	s.entries[key] = sharedEntry{value: append([]byte(nil), value...), cas: next}
	return true
}
