// The hooks Envoy requires but the filter has no work for. They are C, not
// Go: Envoy calls the body hooks once per chunk of every stream (a
// WebSocket's frames included, in both directions), and a call into Go
// from an Envoy thread costs a cgo callback (taking a Go P and M); a C
// function that returns costs a call. Each returns Continue (0).
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_stream.h"

#ifdef DP_PROBE
// With the probe build, the request-body hook counts its calls, which the
// Go side reads (dp_body_calls).
static uint64_t dp_body_call_count;
uint64_t dp_body_calls(void) { return __atomic_load_n(&dp_body_call_count, __ATOMIC_RELAXED); }
#define DP_COUNT_BODY_CALL() __atomic_fetch_add(&dp_body_call_count, 1, __ATOMIC_RELAXED)
#else
#define DP_COUNT_BODY_CALL()
#endif

// A new stream is a zeroed dp_stream naming its filter config; Go sees
// it first in the request-headers hook. It is destroyed here, entering Go
// only when the gate still holds something for it (an identity's
// stream count to give back).
uintptr_t envoy_dynamic_module_on_http_filter_new(uintptr_t config, uintptr_t host) {
	dp_stream* s = calloc(1, sizeof(dp_stream));
	if (s) s->config = config;
	return (uintptr_t)s;
}

void dp_go_http_stream_destroy(uintptr_t handle);

void envoy_dynamic_module_on_http_filter_destroy(uintptr_t module) {
	dp_stream* s = (dp_stream*)module;
	if (!s) return;
	if (s->handle) dp_go_http_stream_destroy(s->handle);
	free(s);
}

int envoy_dynamic_module_on_http_filter_request_body(uintptr_t host, uintptr_t filter, bool end) {
	DP_COUNT_BODY_CALL();
	return 0;
}
int envoy_dynamic_module_on_http_filter_response_body(uintptr_t host, uintptr_t filter, bool end) { return 0; }
int envoy_dynamic_module_on_http_filter_request_trailers(uintptr_t host, uintptr_t filter) { return 0; }
int envoy_dynamic_module_on_http_filter_response_trailers(uintptr_t host, uintptr_t filter) { return 0; }
int envoy_dynamic_module_on_http_filter_response_headers(uintptr_t host, uintptr_t filter, bool end) { return 0; }
void envoy_dynamic_module_on_http_filter_stream_complete(uintptr_t host, uintptr_t filter) {}

// Hooks for features the filter never asks for (callouts, scheduling,
// watermarks), required by Envoy 1.40 all the same. The System V calling
// convention lets a callee ignore trailing arguments, so each takes only
// the leading handles.
void envoy_dynamic_module_on_http_filter_http_callout_done(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_http_stream_headers(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_http_stream_data(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_http_stream_trailers(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_http_stream_complete(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_http_stream_reset(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_scheduled(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(uintptr_t host, uintptr_t filter) {}
void envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(uintptr_t host, uintptr_t filter) {}
