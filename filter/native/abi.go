// Command native is a proof-of-life Envoy dynamic module built from Go with
// -buildmode=c-shared. It speaks the C ABI of Envoy 1.40's dynamic modules
// directly: the declarations below are ours, written from the ABI header's
// documented signatures, because Envoy's own Go SDK is not servable from the
// module proxy.
//
// The module does one visible thing so a test can prove Envoy loaded it and
// called into Go: every response gets the header x-directpipe-native.
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

// Envoy keeps both of these after the call returns, so they live in C memory,
// out of reach of Go's rule against C holding Go pointers.
// dp_abi_version is compared with Envoy's own (v0.2.0 for 1.40); a mismatch
// is only a warning in Envoy's log.
static const char dp_abi_version[] = "v0.2.0";
static const char* dp_abi_version_ptr(void) { return dp_abi_version; }
// The module keeps no per-config or per-stream state yet, so every handle it
// returns points here: Envoy only needs a non-null pointer.
static char dp_handle;
static void* dp_handle_ptr(void) { return &dp_handle; }

// Envoy's header map selector: request headers are 0, response headers 2.
enum { dp_response_headers = 2 };

// Resolved against Envoy's own exported symbols when Envoy dlopens us. The
// reference is weak so that `go build ./...`, which links this package as a
// plain executable, succeeds without Envoy; dp_add_header checks for it.
__attribute__((weak)) bool envoy_dynamic_module_callback_http_add_header(void* filter_envoy_ptr,
	int header_type, dp_buffer key, dp_buffer value);

static bool dp_add_header(void* filter_envoy_ptr, int header_type, dp_buffer key, dp_buffer value) {
	if (!envoy_dynamic_module_callback_http_add_header) return false;
	return envoy_dynamic_module_callback_http_add_header(filter_envoy_ptr, header_type, key, value);
}
*/
import "C"

import "unsafe"

var (
	markerKey   = []byte("x-directpipe-native")
	markerValue = []byte("go-c-shared")
)

// Status codes shared by all header/body/trailer hooks: 0 means continue.
const statusContinue = 0

func main() {}

//export envoy_dynamic_module_on_program_init
func envoy_dynamic_module_on_program_init() *C.char {
	return C.dp_abi_version_ptr()
}

//export envoy_dynamic_module_on_http_filter_config_new
func envoy_dynamic_module_on_http_filter_config_new(hostConfig unsafe.Pointer, name, config C.dp_buffer) unsafe.Pointer {
	return C.dp_handle_ptr()
}

//export envoy_dynamic_module_on_http_filter_config_destroy
func envoy_dynamic_module_on_http_filter_config_destroy(moduleConfig unsafe.Pointer) {}

//export envoy_dynamic_module_on_http_filter_new
func envoy_dynamic_module_on_http_filter_new(moduleConfig, hostFilter unsafe.Pointer) unsafe.Pointer {
	return C.dp_handle_ptr()
}

//export envoy_dynamic_module_on_http_filter_destroy
func envoy_dynamic_module_on_http_filter_destroy(moduleFilter unsafe.Pointer) {}

//export envoy_dynamic_module_on_http_filter_request_headers
func envoy_dynamic_module_on_http_filter_request_headers(hostFilter, moduleFilter unsafe.Pointer, endOfStream C.bool) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_request_body
func envoy_dynamic_module_on_http_filter_request_body(hostFilter, moduleFilter unsafe.Pointer, endOfStream C.bool) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_request_trailers
func envoy_dynamic_module_on_http_filter_request_trailers(hostFilter, moduleFilter unsafe.Pointer) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_response_headers
func envoy_dynamic_module_on_http_filter_response_headers(hostFilter, moduleFilter unsafe.Pointer, endOfStream C.bool) C.int {
	C.dp_add_header(hostFilter, C.dp_response_headers, buffer(markerKey), buffer(markerValue))
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_response_body
func envoy_dynamic_module_on_http_filter_response_body(hostFilter, moduleFilter unsafe.Pointer, endOfStream C.bool) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_response_trailers
func envoy_dynamic_module_on_http_filter_response_trailers(hostFilter, moduleFilter unsafe.Pointer) C.int {
	return statusContinue
}

//export envoy_dynamic_module_on_http_filter_stream_complete
func envoy_dynamic_module_on_http_filter_stream_complete(hostFilter, moduleFilter unsafe.Pointer) {}

// buffer lends b to Envoy for the length of one callback: Envoy copies header
// names and values, and b is package-level, so the GC never moves it.
func buffer(b []byte) C.dp_buffer {
	return C.dp_buffer{ptr: (*C.char)(unsafe.Pointer(&b[0])), length: C.size_t(len(b))}
}
