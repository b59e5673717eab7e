package main

/*
#include "dp_abi.h"
dp_conn* dp_conn_new(uintptr_t handle);
void dp_conn_free(dp_conn* c);
*/
import "C"

import (
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/gate"
	"github.com/directpipe/directpipe/filter/tcpcheck"
)

// netConfig is one tcp route's network filter configuration: its plugin
// name (the filter name, TCPRootIDPrefix and the route) and its one
// policy's JSON. Each worker gets its own tcp gate, as each gets its own
// Wasm VM; the quotas live in the process-wide shared data, so the tcp
// routes and the HTTP filter count one identity's streams together.
type netConfig struct {
	raw    []byte
	plugin string
	// counters are defined while Envoy creates the config, then only
	// read; envoy is set only then.
	counters map[string]C.size_t
	envoy    C.uintptr_t

	workers []*netWorker
	mu      sync.Mutex
	extra   map[uint32]*netWorker
	stop    chan struct{}
	// root is the root id this config's policy has in the gates of the
	// older configs it supersedes (supersede.go).
	root uint32
}

// netWorker is one worker thread's tcp gate and the connections it holds,
// by the ids the gate knows them by, so that the gate can close another
// connection of the worker (the oldest of a flood, a late handshake).
type netWorker struct {
	mu    sync.Mutex
	g     *gate.TCP
	h     *netHost
	next  uint32
	conns map[uint32]*netConn
	// superseded is the root id of the newer config's policy configured
	// in this gate (supersede.go); 0 for none.
	superseded uint32
}

// netConn is the Go state of one connection; its C half (dp_conn) holds
// the decided flag the read hook tests.
type netConn struct {
	w      *netWorker
	id     uint32
	c      *C.dp_conn
	filter C.uintptr_t // Envoy's handle of the connection

	// The head timeout: a timer that, from its own goroutine, asks Envoy
	// to run the worker's tick on the connection's thread (Envoy gives a
	// dynamic module's network filter no timer of its own). mu guards the
	// scheduler against the timer firing while the connection goes.
	mu        sync.Mutex
	scheduler C.uintptr_t
	timer     *time.Timer

	// orphaned marks an undecided connection whose gate was replaced
	// after a panic: the new gate does not know it, so it is closed on its
	// own next event. Guarded by the worker's mu.
	orphaned bool
}

// schedule asks Envoy for the connection's scheduled event, run on its own
// thread with its own handle (a connection Envoy has already destroyed gets
// none). Safe from any goroutine.
func (nc *netConn) schedule() {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.scheduler != 0 {
		C.dp_net_scheduler_commit(nc.scheduler, headTimeoutEvent)
	}
}

// headTimeoutEvent is the scheduler event of a connection's head timeout.
const headTimeoutEvent = 1

// startHeadTimer arms the head timeout of an undecided connection.
func (nc *netConn) startHeadTimer(hostFilter C.uintptr_t) {
	s := C.dp_net_scheduler_new(hostFilter)
	if s == 0 {
		return // the next new connection on this worker closes it late instead
	}
	nc.mu.Lock()
	defer nc.mu.Unlock()
	nc.scheduler = s
	nc.timer = time.AfterFunc(tcpcheck.HeadTimeout, nc.schedule)
}

// stopHeadTimer disarms it: the handshake is decided or the connection
// is going. Runs on the connection's worker thread.
func (nc *netConn) stopHeadTimer() {
	nc.mu.Lock()
	defer nc.mu.Unlock()
	if nc.timer != nil {
		nc.timer.Stop()
		nc.timer = nil
	}
	if nc.scheduler != 0 {
		C.dp_net_scheduler_delete(nc.scheduler)
		nc.scheduler = 0
	}
}

//export envoy_dynamic_module_on_network_filter_config_new
func envoy_dynamic_module_on_network_filter_config_new(hostConfig C.uintptr_t, name, config C.dp_buffer) (module C.uintptr_t) {
	countGoEntry()
	defer func() {
		if r := recover(); r != nil {
			logPanic(r, "the tcp configuration is rejected")
			module = 0
		}
	}()
	c := &netConfig{
		raw:      C.GoBytes(unsafe.Pointer(config.ptr), C.int(config.length)),
		plugin:   C.GoStringN(name.ptr, C.int(name.length)),
		counters: map[string]C.size_t{},
		extra:    map[uint32]*netWorker{},
		envoy:    hostConfig,
	}
	n := max(uint32(C.dp_concurrency()), 1)
	reserveProcs(n)
	for range n {
		w, ok := c.newWorker()
		if !ok {
			return 0
		}
		c.workers = append(c.workers, w)
	}
	c.envoy = 0
	c.stop = make(chan struct{})
	go c.keepAlive(c.stop)
	c.register()
	return C.uintptr_t(cgo.NewHandle(c))
}

func (c *netConfig) newWorker() (*netWorker, bool) {
	w := &netWorker{g: gate.NewTCP(), next: firstStream, conns: map[uint32]*netConn{}}
	w.h = &netHost{cfg: c, w: w}
	// The counters the Wasm module defines for every plugin, which the
	// tcp gate counts too (while Envoy creates the config only).
	for _, name := range []string{contract.MetricTokenCacheHits, contract.MetricTokenCacheMisses, contract.MetricHostVerified, contract.MetricHostVerifyUnavailable} {
		w.h.DefineCounter(name)
	}
	if !w.g.Configure(w.h, rootID, c.plugin) {
		return nil, false
	}
	return w, true
}

// keepAlive keeps the connections' quota counts alive, as the HTTP
// config's keepAlive does; it touches only the module's shared data.
func (c *netConfig) keepAlive(stop <-chan struct{}) {
	tick := time.NewTicker(gate.AliveRefresh)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			for _, w := range c.allWorkers() {
				w.mu.Lock()
				w.g.Refresh(w.h, now)
				w.mu.Unlock()
			}
		}
	}
}

func (c *netConfig) allWorkers() []*netWorker {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := append([]*netWorker(nil), c.workers...)
	for _, w := range c.extra {
		all = append(all, w)
	}
	return all
}

// worker returns the gate of the worker that runs filter.
func (c *netConfig) worker(filter C.uintptr_t) *netWorker {
	i := uint32(C.dp_net_worker_index(filter))
	if int(i) < len(c.workers) {
		return c.workers[i]
	}
	// In register's order: the registry, then the config.
	tcpConfigs.Lock()
	defer tcpConfigs.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if w := c.extra[i]; w != nil {
		return w
	}
	w, ok := c.newWorker()
	if !ok {
		return nil
	}
	c.catchUp(w)
	c.extra[i] = w
	return w
}

//export envoy_dynamic_module_on_network_filter_config_destroy
func envoy_dynamic_module_on_network_filter_config_destroy(moduleConfig C.uintptr_t) {
	countGoEntry()
	h := cgo.Handle(moduleConfig)
	c := h.Value().(*netConfig)
	close(c.stop)
	c.unregister()
	h.Delete()
}

//export envoy_dynamic_module_on_network_filter_new
func envoy_dynamic_module_on_network_filter_new(moduleConfig, hostFilter C.uintptr_t) C.uintptr_t {
	countGoEntry()
	cfg := cgo.Handle(moduleConfig).Value().(*netConfig)
	nc := &netConn{w: cfg.worker(hostFilter), filter: hostFilter}
	h := cgo.NewHandle(nc)
	nc.c = C.dp_conn_new(C.uintptr_t(h))
	if nc.c == nil {
		h.Delete()
		return 0 // Envoy closes the connection
	}
	if nc.w != nil {
		nc.w.mu.Lock()
		nc.id = nc.w.next
		nc.w.next++
		if nc.w.next >= supersedeRoots {
			nc.w.next = firstStream
		}
		nc.w.conns[nc.id] = nc
		nc.w.g.ContextCreate(nc.id, rootID, time.Now())
		nc.w.mu.Unlock()
	}
	return C.uintptr_t(uintptr(unsafe.Pointer(nc.c)))
}

// conn finds the Go state of a connection from its C half.
func conn(module C.uintptr_t) *netConn {
	c := C.dp_conn_of(module)
	return cgo.Handle(c.handle).Value().(*netConn)
}

//export envoy_dynamic_module_on_network_filter_new_connection
func envoy_dynamic_module_on_network_filter_new_connection(hostFilter, module C.uintptr_t) C.int {
	countGoEntry()
	nc := conn(module)
	return nc.run(hostFilter, func(w *netWorker) C.int {
		// Late handshakes are closed by their own timers (startHeadTimer);
		// a new connection closes any a timer missed, as the Wasm filter's
		// tick would. It looks at the oldest pending handshake only.
		w.g.Tick(w.h, rootID, time.Now())
		w.h.filter = hostFilter
		action := w.g.NewConnection(w.h, nc.id)
		if action == gate.Pause {
			nc.startHeadTimer(hostFilter)
		}
		return C.int(action)
	})
}

// run calls body with the connection's worker locked and its host bound
// to the connection. A connection without a worker is closed; a panic in
// body closes the connection (failed) and stops it, never unwinding into
// Envoy.
func (nc *netConn) run(hostFilter C.uintptr_t, body func(w *netWorker) C.int) (status C.int) {
	if nc.w == nil {
		C.dp_net_close(hostFilter, C.dp_close_no_flush)
		return statusStop
	}
	defer func() {
		if r := recover(); r != nil {
			nc.failed(r, hostFilter)
			status = statusStop
		}
	}()
	w := nc.w
	w.mu.Lock()
	defer w.mu.Unlock()
	w.h.filter = hostFilter
	defer func() { w.h.filter = 0 }()
	return body(w)
}

//export envoy_dynamic_module_on_network_filter_scheduled
func envoy_dynamic_module_on_network_filter_scheduled(hostFilter, module C.uintptr_t, event C.uint64_t) {
	countGoEntry()
	nc := conn(module)
	if nc.w == nil || event != headTimeoutEvent {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			nc.failed(r, hostFilter)
		}
	}()
	w := nc.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if nc.orphaned {
		C.dp_net_close(hostFilter, C.dp_close_no_flush)
		return
	}
	// The worker's tick closes every handshake of the worker that is
	// late, this one included, as the Wasm filter's tick does; it counts
	// them on this connection's config.
	w.h.filter = hostFilter
	w.g.Tick(w.h, rootID, time.Now())
	w.h.filter = 0
}

//export dp_net_undecided_read
func dp_net_undecided_read(hostFilter, module C.uintptr_t, length C.size_t, endStream C.bool) C.int {
	countGoEntry()
	nc := conn(module)
	return nc.run(hostFilter, func(w *netWorker) C.int {
		if nc.orphaned {
			C.dp_net_close(hostFilter, C.dp_close_no_flush)
			return statusStop
		}
		netProbe(w.h)
		size := uint32(min(uint64(length), 1<<31))
		if w.g.DownstreamData(w.h, nc.id, size, bool(endStream), time.Now) == gate.Continue {
			// Allowed: the head is rewritten and every later chunk is the
			// pipe's, which the read hook passes without entering Go.
			nc.c.decided = 1
			nc.stopHeadTimer()
			return statusContinue
		}
		return statusStop
	})
}

// failed handles a panic on a connection: logged, the connection closed
// unanswered, never unwound into Envoy, and the worker's gate started over
// as the HTTP filter's is. The new gate knows none of the old one's
// connections: a decided one goes on in C untouched, an undecided one is
// orphaned and closed on its own next event (its scheduled one, asked for
// now, or its next read), and the old gate's stream counts expire from
// their quotas as a failed Wasm VM's do. Only this connection is closed
// here, through the handle Envoy just passed in: another's stored handle
// may belong to a connection Envoy is tearing down (Envoy once crashed on
// a null pointer in a close made after a panic).
func (nc *netConn) failed(r any, hostFilter C.uintptr_t) {
	logPanic(r, "the connection is closed and this worker's tcp gate starts over")
	C.dp_net_close(hostFilter, C.dp_close_no_flush)
	w := nc.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, other := range w.conns {
		if other.c.decided == 0 && other != nc {
			other.orphaned = true
			other.schedule()
		}
	}
	g := gate.NewTCP()
	if g.Configure(w.h, rootID, w.h.cfg.plugin) {
		w.g = g
	}
}

//export envoy_dynamic_module_on_network_filter_destroy
func envoy_dynamic_module_on_network_filter_destroy(module C.uintptr_t) {
	countGoEntry()
	c := C.dp_conn_of(module)
	h := cgo.Handle(c.handle)
	nc := h.Value().(*netConn)
	// Freed last: until the worker forgets the connection, its decided
	// flag may be read.
	defer C.dp_conn_free(c)
	h.Delete()
	nc.stopHeadTimer()
	if nc.w == nil {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			logPanic(r, "a tcp connection's state is dropped")
		}
	}()
	nc.w.mu.Lock()
	defer nc.w.mu.Unlock()
	delete(nc.w.conns, nc.id)
	nc.w.h.filter = 0
	nc.w.g.Delete(nc.w.h, nc.id)
}
