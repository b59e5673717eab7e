//go:build nativeprobe

package main

/*
#cgo CFLAGS: -DDP_PROBE
#include "dp_abi.h"
uint64_t dp_body_calls(void);
uint64_t dp_net_read_calls(void);
*/
import "C"

import (
	"bytes"
	"strconv"
	"sync/atomic"
)

// A build with -tags nativeprobe counts the module's request-body calls
// (in hooks.c), over all streams and workers, and answers probePath with
// the count, so a test can see how often Envoy calls the module on a
// stream's data path; a request for panicPath makes the module panic. The
// probe runs before the handshake check, on any route.

const (
	probePath    = "/native/body-calls"
	tcpProbePath = "/native/tcp-calls"
	panicPath    = "/native/panic"
)

// probe answers probePath; it reports whether it did.
func probe(filter C.uintptr_t) bool {
	pairs, _ := requestHeaders(filter)
	for _, kv := range pairs {
		if kv[0] != ":path" {
			continue
		}
		switch kv[1] {
		case probePath:
			sendResponse(filter, 200, "directpipe_native_probe", []byte(strconv.FormatUint(uint64(C.dp_body_calls()), 10)), nil)
			return true
		case tcpProbePath:
			// "<read hook calls> <Go entries>" of the network filter.
			body := strconv.FormatUint(uint64(C.dp_net_read_calls()), 10) + " " + strconv.FormatUint(netGoEntries.Load(), 10)
			sendResponse(filter, 200, "directpipe_native_probe", []byte(body), nil)
			return true
		case panicPath:
			panic("directpipe_native_probe: a panic on request")
		}
	}
	return false
}

// netGoEntries counts the network filter's entries into Go, every hook
// that is Go included.
var netGoEntries atomic.Uint64

func countGoEntry() { netGoEntries.Add(1) }

// netProbe makes the network filter panic on a connection whose first
// bytes ask for panicPath, as probe does for the HTTP filter.
func netProbe(h *netHost) {
	head, _ := h.DownstreamData(0, 64)
	if bytes.HasPrefix(head, []byte("GET "+panicPath+" ")) {
		panic("directpipe_native_probe: a panic on a tcp connection")
	}
}
