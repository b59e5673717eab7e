//go:build !nativefloor

package main

// #include "dp_abi.h"
import "C"

// Without -tags nativefloor the request-headers hook is the Go check.

//export envoy_dynamic_module_on_http_filter_request_headers
func envoy_dynamic_module_on_http_filter_request_headers(hostFilter, moduleFilter C.uintptr_t, endOfStream C.bool) C.int {
	return checkRequestHeaders(hostFilter, moduleFilter)
}
