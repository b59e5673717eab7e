package main

// #include <stdint.h>
import "C"

// Envoy 1.40 resolves these HTTP filter hooks when it creates the filter
// config and refuses the module if one is missing, even though they serve
// features the module never asks for (callouts, scheduling, watermarks).
// The optional ones (local_reply and the config-level callout, stream and
// scheduler hooks) are left out: Envoy loads the module without them.
// Each takes only the leading handles: the System V calling convention lets
// a callee ignore trailing arguments, and a hook that does nothing needs
// none of them.

//export envoy_dynamic_module_on_http_filter_http_callout_done
func envoy_dynamic_module_on_http_filter_http_callout_done(hostFilter, moduleFilter C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_http_stream_headers
func envoy_dynamic_module_on_http_filter_http_stream_headers(hostFilter, moduleFilter C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_http_stream_data
func envoy_dynamic_module_on_http_filter_http_stream_data(hostFilter, moduleFilter C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_http_stream_trailers
func envoy_dynamic_module_on_http_filter_http_stream_trailers(hostFilter, moduleFilter C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_http_stream_complete
func envoy_dynamic_module_on_http_filter_http_stream_complete(hostFilter, moduleFilter C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_http_stream_reset
func envoy_dynamic_module_on_http_filter_http_stream_reset(hostFilter, moduleFilter C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_scheduled
func envoy_dynamic_module_on_http_filter_scheduled(hostFilter, moduleFilter C.uintptr_t) {}

//export envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark
func envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(hostFilter, moduleFilter C.uintptr_t) {
}

//export envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark
func envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(hostFilter, moduleFilter C.uintptr_t) {
}
