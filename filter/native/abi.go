// Command native is a proof-of-life Envoy dynamic module built from Go with
// -buildmode=c-shared. It speaks the C ABI of Envoy 1.40's dynamic modules
// directly: the declarations below are ours, written from the ABI header's
// documented signatures, because Envoy's own Go SDK is not servable from the
// module proxy.
//
// The module does just enough for a test to prove that each piece of the ABI
// a handshake filter needs works from Go: it reads the request headers, keeps
// per-stream state, answers /native/deny with a local reply, and adds
// response headers.
package main

/*
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// A span of bytes owned by whoever passes it; the ABI passes these by value.
typedef struct {
	const char* ptr;
	size_t length;
} dp_buffer;

// One header as Envoy lends it (get_headers) or takes it (send_response).
typedef struct {
	const char* key_ptr;
	size_t key_length;
	const char* value_ptr;
	size_t value_length;
} dp_header;

// Envoy keeps both of these after the call returns, so they live in C memory,
// out of reach of Go's rule against C holding Go pointers.
// dp_abi_version is compared with Envoy's own (v0.2.0 for 1.40); a mismatch
// is only a warning in Envoy's log.
static const char dp_abi_version[] = "v0.2.0";
static const char* dp_abi_version_ptr(void) { return dp_abi_version; }
// The filter configuration has no state yet: Envoy only needs a non-null
// pointer for it.
static char dp_config;
static void* dp_config_ptr(void) { return &dp_config; }

// Envoy's header map selector.
enum { dp_request_headers = 0, dp_response_headers = 2 };

// Envoy's own exported callbacks, resolved when Envoy dlopens the library.
// The references are weak so that `go build ./...`, which links this package
// as a plain executable, succeeds without Envoy; the wrappers check them.
__attribute__((weak)) bool envoy_dynamic_module_callback_http_add_header(uintptr_t filter,
	int header_type, dp_buffer key, dp_buffer value);
__attribute__((weak)) size_t envoy_dynamic_module_callback_http_get_headers_size(uintptr_t filter,
	int header_type);
__attribute__((weak)) bool envoy_dynamic_module_callback_http_get_headers(uintptr_t filter,
	int header_type, dp_header* result);
__attribute__((weak)) void envoy_dynamic_module_callback_http_send_response(uintptr_t filter,
	uint32_t status, dp_header* headers, size_t headers_size, dp_buffer body, dp_buffer details);

static bool dp_add_header(uintptr_t filter, int header_type, dp_buffer key, dp_buffer value) {
	if (!envoy_dynamic_module_callback_http_add_header) return false;
	return envoy_dynamic_module_callback_http_add_header(filter, header_type, key, value);
}

static size_t dp_headers_size(uintptr_t filter, int header_type) {
	if (!envoy_dynamic_module_callback_http_get_headers_size) return 0;
	return envoy_dynamic_module_callback_http_get_headers_size(filter, header_type);
}

static bool dp_headers(uintptr_t filter, int header_type, dp_header* result) {
	if (!envoy_dynamic_module_callback_http_get_headers) return false;
	return envoy_dynamic_module_callback_http_get_headers(filter, header_type, result);
}

// The header array is built here, on the C stack: Go may not hand C memory
// that holds Go pointers.
static bool dp_send_response(uintptr_t filter, uint32_t status, dp_buffer key, dp_buffer value,
	dp_buffer body, dp_buffer details) {
	if (!envoy_dynamic_module_callback_http_send_response) return false;
	dp_header header = {key.ptr, key.length, value.ptr, value.length};
	envoy_dynamic_module_callback_http_send_response(filter, status, &header, 1, body, details);
	return true;
}
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

const (
	// Status codes of the header hooks.
	statusContinue = 0
	statusStop     = 1

	markerKey   = "x-directpipe-native"
	markerValue = "go-c-shared"
	pathKey     = "x-directpipe-native-path"
	denyPath    = "/native/deny"
	// maxHeaders bounds what one stream may make the module copy.
	maxHeaders = 256
)

// stream is the module's state for one HTTP stream, reached from Envoy's
// handle through a cgo.Handle: Envoy may keep only an integer, never a Go
// pointer.
type stream struct {
	path string
}

func main() {}

//export envoy_dynamic_module_on_program_init
func envoy_dynamic_module_on_program_init() *C.char {
	return C.dp_abi_version_ptr()
}

//export envoy_dynamic_module_on_http_filter_config_new
func envoy_dynamic_module_on_http_filter_config_new(hostConfig C.uintptr_t, name, config C.dp_buffer) unsafe.Pointer {
	return C.dp_config_ptr()
}

//export envoy_dynamic_module_on_http_filter_config_destroy
func envoy_dynamic_module_on_http_filter_config_destroy(moduleConfig C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_new
func envoy_dynamic_module_on_http_filter_new(moduleConfig, hostFilter C.uintptr_t) C.uintptr_t {
	return C.uintptr_t(cgo.NewHandle(&stream{}))
}

//export envoy_dynamic_module_on_http_filter_destroy
func envoy_dynamic_module_on_http_filter_destroy(moduleFilter C.uintptr_t) {
	cgo.Handle(moduleFilter).Delete()
}

//export envoy_dynamic_module_on_http_filter_request_headers
func envoy_dynamic_module_on_http_filter_request_headers(hostFilter, moduleFilter C.uintptr_t, endOfStream C.bool) C.int {
	s := cgo.Handle(moduleFilter).Value().(*stream)
	for _, h := range requestHeaders(hostFilter) {
		if h[0] == ":path" {
			s.path = h[1]
		}
	}
	if body, ok := probeReply(s.path); ok {
		C.dp_send_response(hostFilter, 200, buffer(markerKey), buffer("probe"), buffer(body), buffer("directpipe_native_probe"))
		return statusStop
	}
	if s.path == denyPath {
		C.dp_send_response(hostFilter, 403, buffer(markerKey), buffer("denied"),
			buffer("denied by the native module\n"), buffer("directpipe_native_denied"))
		return statusStop
	}
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_response_headers
func envoy_dynamic_module_on_http_filter_response_headers(hostFilter, moduleFilter C.uintptr_t, endOfStream C.bool) C.int {
	s := cgo.Handle(moduleFilter).Value().(*stream)
	if s.path == denyPath {
		// The local reply carries its own marker.
		return statusContinue
	}
	C.dp_add_header(hostFilter, C.dp_response_headers, buffer(markerKey), buffer(markerValue))
	C.dp_add_header(hostFilter, C.dp_response_headers, buffer(pathKey), buffer(s.path))
	return statusContinue
}

// The body and trailer hooks are required too: Envoy refuses a module
// without them, so a dynamic-module HTTP filter cannot stay out of the data
// path the way a Proxy-Wasm one that registers no body callback does.
//
//export envoy_dynamic_module_on_http_filter_request_body
func envoy_dynamic_module_on_http_filter_request_body(hostFilter, moduleFilter C.uintptr_t, endOfStream C.bool) C.int {
	countBodyCall()
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_request_trailers
func envoy_dynamic_module_on_http_filter_request_trailers(hostFilter, moduleFilter C.uintptr_t) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_response_body
func envoy_dynamic_module_on_http_filter_response_body(hostFilter, moduleFilter C.uintptr_t, endOfStream C.bool) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_response_trailers
func envoy_dynamic_module_on_http_filter_response_trailers(hostFilter, moduleFilter C.uintptr_t) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_stream_complete
func envoy_dynamic_module_on_http_filter_stream_complete(hostFilter, moduleFilter C.uintptr_t) {}

// requestHeaders copies the stream's request headers, pseudo-headers
// included, out of Envoy's memory, which is only lent for the callback.
func requestHeaders(hostFilter C.uintptr_t) [][2]string {
	n := int(C.dp_headers_size(hostFilter, C.dp_request_headers))
	if n == 0 || n > maxHeaders {
		return nil
	}
	raw := make([]C.dp_header, n)
	if !C.dp_headers(hostFilter, C.dp_request_headers, &raw[0]) {
		return nil
	}
	out := make([][2]string, n)
	for i, h := range raw {
		out[i] = [2]string{C.GoStringN(h.key_ptr, C.int(h.key_length)), C.GoStringN(h.value_ptr, C.int(h.value_length))}
	}
	return out
}

// buffer lends s to Envoy for the length of one callback; Envoy copies what
// it keeps. An empty string is lent as a null span.
func buffer(s string) C.dp_buffer {
	if s == "" {
		return C.dp_buffer{}
	}
	return C.dp_buffer{ptr: (*C.char)(unsafe.Pointer(unsafe.StringData(s))), length: C.size_t(len(s))}
}
