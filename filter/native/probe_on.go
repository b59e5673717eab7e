//go:build nativeprobe

package main

import (
	"strconv"
	"sync/atomic"
)

// A build with -tags nativeprobe counts the module's request-body calls, over
// all streams and workers, and answers probePath with the count, so a test
// can see how often Envoy calls into Go on a stream's data path.

const probePath = "/native/body-calls"

var bodyCalls atomic.Int64

func countBodyCall() { bodyCalls.Add(1) }

// probeReply is the local reply body for path, and whether path is the probe.
func probeReply(path string) (string, bool) {
	if path != probePath {
		return "", false
	}
	return strconv.FormatInt(bodyCalls.Load(), 10), true
}
