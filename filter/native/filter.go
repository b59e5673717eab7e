package main

// #include "dp_abi.h"
// #include "dp_stream.h"
// #include "verdict.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/gate"
)

// rootID is the one plugin of each worker's gate: a filter config is one
// plugin, and its streams are numbered from firstStream on.
const (
	rootID      = 1
	firstStream = 2
)

// filterConfig is one filter configuration (one ECDS or listener update):
// Envoy creates it on the main thread and then creates streams from it on
// every worker at once. A Proxy-Wasm VM is single-threaded; to run the
// same gate here, each worker gets its own gate, configured from the same
// JSON, so a worker's handshakes never wait for another's and each keeps
// its own token cache, as each Wasm VM does.
type filterConfig struct {
	raw []byte
	// counters are defined while Envoy creates the config (Envoy freezes
	// the config's stats after that), then only read.
	counters map[string]C.size_t
	envoy    C.uintptr_t // while defining counters only
	stats    identityStats

	// workers are the gates of Envoy's workers, by worker index, made
	// when the config is created and then only read; extra holds gates
	// for indexes past them, should Envoy have more workers than it said.
	workers []*worker
	mu      sync.Mutex
	extra   map[uint32]*worker
	// stop ends keepAlive when Envoy destroys the config.
	stop chan struct{}
}

// worker is one worker thread's gate. Envoy runs a worker's streams on its
// one thread, so the lock is never contended; it is there because Go
// cannot prove that.
type worker struct {
	mu   sync.Mutex
	g    *gate.HTTP
	h    *host
	next uint32
	// gen counts the gates this worker has had (see reset).
	gen uint64
}

// reset gives the worker a fresh gate after its code panicked, as Envoy
// gives a Wasm VM that traps a fresh instance: whatever the panic left
// half done is dropped, and the streams the old gate counted expire from
// its identities' quotas as a failed VM's do (gate.AliveTimeout). w.mu is
// held.
func (w *worker) reset() {
	g := gate.NewHTTP()
	if !g.Configure(w.h, rootID) {
		// The same JSON configured the gate it replaces: this cannot
		// happen, and the old gate stays.
		return
	}
	w.g, w.gen = g, w.gen+1
}

// stream is the module's state for one HTTP stream while its request
// headers are checked, and after that only if the gate holds something
// for it, reached then from Envoy's dp_stream through a cgo.Handle:
// Envoy keeps C memory, never a Go pointer.
type stream struct {
	w     *worker
	envoy C.uintptr_t // Envoy's filter, alive until destroy returns
	id    uint32
	gen   uint64 // the worker's gate this stream was created in
}

//export envoy_dynamic_module_on_http_filter_config_new
func envoy_dynamic_module_on_http_filter_config_new(hostConfig C.uintptr_t, name, config C.dp_buffer) (module C.uintptr_t) {
	defer func() {
		if r := recover(); r != nil {
			logPanic(r, "the configuration is rejected")
			module = 0
		}
	}()
	c := &filterConfig{
		raw:      C.GoBytes(unsafe.Pointer(config.ptr), C.int(config.length)),
		counters: map[string]C.size_t{},
		extra:    map[uint32]*worker{},
		envoy:    hostConfig,
	}
	// Every worker's gate is configured now, on the main thread, so that
	// a bad configuration is a rejected update (the last good one keeps
	// serving) and no handshake pays for parsing.
	n := uint32(C.dp_concurrency())
	if n == 0 {
		n = 1
	}
	reserveProcs(n)
	for range n {
		w, ok := c.newWorker()
		if !ok {
			return 0
		}
		c.workers = append(c.workers, w)
	}
	c.stats = defineIdentityStats(hostConfig)
	c.workers[0].h.DefineCounter(verdictReplays)
	// Read on the main thread, not in a worker's first handshake.
	processNodeID()
	c.envoy = 0
	c.stop = make(chan struct{})
	// The C hooks see the config as a dp_config: Go's handle and the
	// workers' verdict tables, empty for every new config, so that a
	// policy change, a key rotation or a revoked key (each a new config)
	// never replays a verdict the old one gave.
	handle := cgo.NewHandle(c)
	cc := C.dp_config_new(C.uintptr_t(handle), C.uint32_t(n))
	if cc == nil {
		handle.Delete()
		return 0
	}
	if id, ok := c.counters[verdictReplays]; ok {
		cc.replays, cc.replays_ok = id, true
	}
	go c.keepAlive(c.stop)
	return C.uintptr_t(uintptr(unsafe.Pointer(cc)))
}

// keepAlive says every AliveRefresh that each worker's counted streams are
// alive. The gate drops the stream counts of a quota silent for
// gate.AliveTimeout (a failed Wasm VM's), and a worker whose streams are
// all long-lived calls nothing else; nor does a config Envoy has replaced
// whose streams are still open. A Wasm VM does this from its tick; Envoy
// calls an HTTP filter config of a dynamic module on no timer, and none is
// needed: this touches only the module's own shared data, never Envoy.
func (c *filterConfig) keepAlive(stop <-chan struct{}) {
	tick := time.NewTicker(gate.AliveRefresh)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			for _, w := range c.allWorkers() {
				w.refresh(now)
			}
		}
	}
}

// refresh says the worker's counted streams are alive; a panic resets its
// gate rather than end Envoy.
func (w *worker) refresh(now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			logPanic(r, workerReset)
			w.reset()
		}
	}()
	w.g.Refresh(w.h, now)
}

// allWorkers are the gates of this config, extra ones included.
func (c *filterConfig) allWorkers() []*worker {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := append([]*worker(nil), c.workers...)
	for _, w := range c.extra {
		all = append(all, w)
	}
	return all
}

// newWorker configures a gate from the configuration's JSON.
func (c *filterConfig) newWorker() (*worker, bool) {
	w := &worker{g: gate.NewHTTP(), h: &host{cfg: c}, next: firstStream}
	if !w.g.Configure(w.h, rootID) {
		return nil, false
	}
	return w, true
}

// worker returns the gate of the worker that runs filter, configuring one
// if Envoy has more workers than it said (or cannot say which this is).
func (c *filterConfig) worker(filter C.uintptr_t) *worker {
	i := uint32(C.dp_worker_index(filter))
	if int(i) < len(c.workers) {
		return c.workers[i]
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.extra[i]; w != nil {
		return w
	}
	w, ok := c.newWorker()
	if !ok {
		// The same JSON configured the others: this cannot happen, and a
		// nil worker refuses the stream.
		return nil
	}
	c.extra[i] = w
	return w
}

//export envoy_dynamic_module_on_http_filter_config_destroy
func envoy_dynamic_module_on_http_filter_config_destroy(moduleConfig C.uintptr_t) {
	cc := C.dp_config_of(moduleConfig)
	h := cgo.Handle(cc.handle)
	close(h.Value().(*filterConfig).stop)
	h.Delete()
	C.dp_config_free(cc)
}

// number gives a new stream its id in the worker's gate. w.mu is held.
func (w *worker) number() (id uint32, gen uint64) {
	id = w.next
	w.next++
	if w.next < firstStream { // wrapped
		w.next = firstStream
	}
	w.g.ContextCreate(id, rootID)
	return id, w.gen
}

// Envoy's stream hooks new and destroy are C (hooks.c): a stream is a
// dp_stream, and Go sees it first here. A stream the gate keeps nothing
// for (no identity's stream count) is forgotten by the gate before this
// hook returns, so its destruction never enters Go; the others keep a
// handle in the dp_stream, given back by dp_go_http_stream_destroy.

//export dp_go_http_stream_destroy
func dp_go_http_stream_destroy(handle C.uintptr_t) {
	h := cgo.Handle(handle)
	s := h.Value().(*stream)
	h.Delete()
	defer func() {
		if r := recover(); r != nil {
			s.failed(r)
		}
	}()
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	// Giving back a quota needs no stream: the host's filter is unset, so
	// nothing but the live-stream gauge reaches Envoy, set through the
	// filter Envoy is destroying.
	s.w.h.filter = 0
	s.w.h.ending = s.envoy
	defer func() { s.w.h.ending = 0 }()
	if s.gen == s.w.gen {
		s.w.g.Delete(s.w.h, s.id)
	}
}

// dp_go_http_request_headers is the handshake check, once per stream:
// Envoy's request-headers hook (verdict.c) calls it for every request
// whose verdict the worker's table cannot replay.
//
//export dp_go_http_request_headers
func dp_go_http_request_headers(hostFilter, moduleFilter C.uintptr_t, endOfStream C.bool) (status C.int) {
	cs := C.dp_stream_of(moduleFilter)
	var s *stream
	// Runs last, after the deferred unlock below: the worker is free.
	defer func() {
		if r := recover(); r != nil {
			if s != nil {
				s.failed(r)
			} else {
				logPanic(r, "the stream is refused")
			}
			refuse(hostFilter)
			status = statusStop
		}
	}()
	if probe(hostFilter) {
		return statusStop
	}
	if cs.checked != 0 {
		return statusContinue
	}
	cs.checked = 1
	cfg := C.dp_stream_config(cs)
	s = &stream{w: cgo.Handle(cfg.handle).Value().(*filterConfig).worker(hostFilter), envoy: hostFilter}
	if s.w == nil {
		refuse(hostFilter)
		return statusStop
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	s.id, s.gen = s.w.number()
	h := s.w.h
	rec := &verdictRecord{}
	h.filter, h.rec = hostFilter, rec
	defer func() { h.filter, h.rec = 0, nil }()
	// The monotonic clock is read first: a verdict's deadline, counted
	// from it, can only come early, never late.
	mono := C.dp_verdict_mono_now()
	now := time.Now()
	action := s.w.g.RequestHeaders(h, s.id, now)
	held := s.w.g.Holds(s.id)
	if held {
		cs.handle = C.uintptr_t(cgo.NewHandle(s))
	} else {
		s.w.g.Delete(h, s.id)
	}
	if action != gate.Continue {
		return statusStop
	}
	if !held {
		rec.store(C.dp_config_table(cfg, C.dp_worker_index(hostFilter)), mono, now)
	}
	// The route cache is left as it is after the edits. Envoy clears it
	// for a Wasm filter that edits request headers, but the dynamic
	// module ABI's header setters do not, so the router keeps the route
	// matched on the request as the client sent it: the route whose
	// policy the gate just checked, never another. A re-match could only
	// land on that route again or on the route-changed answer (the gate
	// still sets the route marker for it), so skipping it spends a route
	// match less and allows nothing more. Should a later filter clear the
	// cache, the marker pins that re-match as it does for the Wasm build.
	return statusContinue
}

// refuse answers a stream the module cannot check 500 internal_error.
func refuse(hostFilter C.uintptr_t) {
	sendResponse(hostFilter, 500, contract.LocalReplyDetailPrefix+contract.ReasonInternal, contract.Body(contract.ReasonInternal),
		[][2]string{{"content-type", "application/json"}})
}

// failed handles a panic of the module's Go code on a stream: a panic
// must never unwind into Envoy, where it would end the process and every
// call it carries. It is logged and the worker's gate starts over.
func (s *stream) failed(r any) {
	logPanic(r, workerReset)
	if s.w == nil {
		return
	}
	s.w.mu.Lock()
	defer s.w.mu.Unlock()
	s.w.reset()
}

const workerReset = "this worker's gate starts over"

// logPanic logs a panic the module recovered from, and what follows.
func logPanic(r any, then string) {
	log(logLevels[gate.LevelError], fmt.Sprintf("directpipe: the handshake filter failed: %v; %s", r, then))
}

// The other hooks Envoy requires, the per-chunk body hooks among them,
// are in hooks.c: they never enter Go.

// errNoStream: a call that needs a stream came outside of one.
var errNoStream = errors.New("no stream: called outside of a request's callback")
