// Command native is the handshake filter as an Envoy dynamic module: a Go
// c-shared library Envoy 1.40 loads through the dynamic-module C ABI, with
// no VM between Envoy and the filter's Go code. It binds filter/gate, the
// logic the Proxy-Wasm module runs, to that ABI, as an HTTP filter (the
// upgrade chain; filter.go) and as a network filter (tcp mode routes;
// network.go): the same configuration (the filter config string is the
// plugin configuration's JSON), the same decisions, reason codes and
// header edits.
//
// The declarations below are ours, written from the ABI header of Envoy
// v1.40.0 (source/extensions/dynamic_modules/abi/), because Envoy's own Go
// SDK is not servable from the module proxy. Envoy's callbacks are weak
// references, resolved when Envoy loads the library, so that `go build
// ./...`, which links this package as a plain executable, succeeds without
// Envoy; each wrapper checks its callback.
package main

// #include "dp_abi.h"
import "C"

import (
	"runtime"
	"unsafe"
)

// Status codes of the header and body hooks.
const (
	statusContinue = 0
	statusStop     = 1
)

// maxHeaders bounds what one request may make the module copy; a request
// with more is refused (Envoy's own limit is 100 by default).
const maxHeaders = 256

func main() {}

//export envoy_dynamic_module_on_program_init
func envoy_dynamic_module_on_program_init() *C.char {
	return C.dp_abi_version_ptr()
}

// requestHeaders copies the stream's request headers, pseudo-headers
// included, out of Envoy's memory, which is only lent for the callback.
// Every name and value is copied into one buffer that the strings share
// (it is never written again): three allocations per request rather than
// two per header.
func requestHeaders(filter C.uintptr_t) ([][2]string, bool) {
	n := int(C.dp_headers_size(filter, C.dp_request_headers))
	if n == 0 || n > maxHeaders {
		return nil, false
	}
	raw := make([]C.dp_header, n)
	if !C.dp_headers(filter, C.dp_request_headers, &raw[0]) {
		return nil, false
	}
	size := 0
	for _, h := range raw {
		size += int(h.key_length) + int(h.value_length)
	}
	buf := make([]byte, 0, size)
	for _, h := range raw {
		buf = append(buf, unsafe.Slice((*byte)(unsafe.Pointer(h.key_ptr)), int(h.key_length))...)
		buf = append(buf, unsafe.Slice((*byte)(unsafe.Pointer(h.value_ptr)), int(h.value_length))...)
	}
	all := unsafe.String(unsafe.SliceData(buf), len(buf))
	out := make([][2]string, n)
	at := 0
	for i, h := range raw {
		k, v := int(h.key_length), int(h.value_length)
		out[i] = [2]string{all[at : at+k], all[at+k : at+k+v]}
		at += k + v
	}
	return out, true
}

// setRequestHeader sets a request header, or removes it when remove is
// set.
func setRequestHeader(filter C.uintptr_t, name, value string, remove bool) bool {
	v := buffer(value)
	if remove {
		v = C.dp_buffer{}
	} else if value == "" {
		// An empty value is not a removal: point at a byte of length 0.
		v = C.dp_buffer{ptr: (*C.char)(unsafe.Pointer(unsafe.StringData(" "))), length: 0}
	}
	return bool(C.dp_set_header(filter, C.dp_request_headers, buffer(name), v))
}

// sendResponse answers the stream locally. The header array is Go memory
// holding Go pointers, which C may be handed only while they are pinned.
func sendResponse(filter C.uintptr_t, status int, details string, body []byte, headers [][2]string) bool {
	var pin runtime.Pinner
	defer pin.Unpin()
	hs := make([]C.dp_header, len(headers))
	for i, h := range headers {
		k, v := buffer(h[0]), buffer(h[1])
		for _, p := range []*C.char{k.ptr, v.ptr} {
			if p != nil {
				pin.Pin(p)
			}
		}
		hs[i] = C.dp_header{key_ptr: k.ptr, key_length: k.length, value_ptr: v.ptr, value_length: v.length}
	}
	var first *C.dp_header
	if len(hs) > 0 {
		first = &hs[0]
	}
	return bool(C.dp_send_response(filter, C.uint32_t(status), first, C.size_t(len(hs)), bytesBuffer(body), buffer(details)))
}

// attribute reads a string attribute of the stream.
func attribute(filter C.uintptr_t, id C.int) (string, bool) {
	var out C.dp_buffer
	if !C.dp_attribute_string(filter, id, &out) {
		return "", false
	}
	return C.GoStringN(out.ptr, C.int(out.length)), true
}

// routeMetadata reads a string of the matched route's filter metadata.
func routeMetadata(filter C.uintptr_t, namespace, key string) (string, bool) {
	var out C.dp_buffer
	if !C.dp_route_metadata_string(filter, buffer(namespace), buffer(key), &out) {
		return "", false
	}
	return C.GoStringN(out.ptr, C.int(out.length)), true
}

// log writes to Envoy's log under [dynamic_modules].
func log(level C.int, msg string) { C.dp_log(level, buffer(msg)) }

// buffer lends s to Envoy for the length of one callback; Envoy copies what
// it keeps. An empty string is lent as a null span.
func buffer(s string) C.dp_buffer {
	if s == "" {
		return C.dp_buffer{}
	}
	return C.dp_buffer{ptr: (*C.char)(unsafe.Pointer(unsafe.StringData(s))), length: C.size_t(len(s))}
}

func bytesBuffer(b []byte) C.dp_buffer {
	if len(b) == 0 {
		return C.dp_buffer{}
	}
	return C.dp_buffer{ptr: (*C.char)(unsafe.Pointer(unsafe.SliceData(b))), length: C.size_t(len(b))}
}
