package main

import "runtime"

// reserveProcs makes sure the Go runtime has a P (a slot to run Go code)
// to spare beyond every Envoy thread that enters the module: each worker
// and the main thread.
//
// A call from Envoy into Go takes a P and, on return, leaves it parked on
// that Envoy thread. Go sizes its Ps by the CPUs the process may use when
// the library loads, and Envoy runs as many workers as CPUs (or is pinned
// to fewer CPUs than workers), so every P ended up parked that way. With
// no idle P left, Go's system monitor polls every 20 µs for as long as
// calls come, competing with the workers for their CPU; with a P to spare
// it used 40% less CPU over a handshake run. The spare P does not keep a worker's own P from being
// taken back between calls: the monitor does that once no goroutine was
// scheduled on it for 10 ms, which a call from C never does
// (docs/filter.md, "Why a call into Go is slow from an Envoy worker").
func reserveProcs(workers uint32) {
	want := int(workers) + 2
	if runtime.GOMAXPROCS(0) < want {
		runtime.GOMAXPROCS(want)
	}
}
