//go:build nativeprobe

package main

// #include "dp_abi.h"
import "C"

import (
	"strconv"
	"sync/atomic"
)

// A build with -tags nativeprobe counts the module's request-body calls, over
// all streams and workers, and answers probePath with the count, so a test
// can see how often Envoy calls into Go on a stream's data path. The
// probe runs before the handshake check, on any route.

const probePath = "/native/body-calls"

var bodyCalls atomic.Int64

func countBodyCall() { bodyCalls.Add(1) }

// probe answers probePath; it reports whether it did.
func probe(filter C.uintptr_t) bool {
	pairs, _ := requestHeaders(filter)
	for _, kv := range pairs {
		if kv[0] == ":path" && kv[1] == probePath {
			sendResponse(filter, 200, "directpipe_native_probe", []byte(strconv.FormatInt(bodyCalls.Load(), 10)), nil)
			return true
		}
	}
	return false
}
