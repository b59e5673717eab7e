package main

import "runtime"

// reserveProcs makes sure the Go runtime has a P (a slot to run Go code)
// to spare beyond every Envoy thread that enters the module: each worker
// and the main thread.
//
// A call from Envoy into Go takes a P and, on return, leaves it wired to
// that Envoy thread in the "syscall" state, so that the thread's next call
// takes it back at once. Go sizes its Ps by the CPUs the process may use
// when the library loads, and Envoy runs as many workers as CPUs (or is
// pinned to fewer CPUs than workers), so every P ends up held that way.
// With no idle P left, Go's system monitor retakes a held P after 20 µs,
// keeps polling every 20 µs for as long as calls come, and is woken by a
// futex on the next call that finds its P gone: on a loaded Envoy that
// monitor competes with the workers for their CPU, and every handshake
// pays a slow re-entry. With a P to spare, a held P is left alone for
// 10 ms, the monitor backs off, and a worker's call re-enters on its own
// P without a lock (docs/filter.md, "Where the cost goes").
func reserveProcs(workers uint32) {
	want := int(workers) + 2
	if runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
}
