//go:build wasip1

// Package proxywasm is the thin glue between Go and the Proxy-Wasm ABI
// 0.2.1: the host calls the handshake filter needs, each named after the
// spec's call and with its semantics, and the memory hand-off the host uses
// to return data.
package proxywasm

// Strings pass as (pointer, length) pairs, which is the spec's layout for
// every string argument. Pointer arguments of these body-less declarations
// escape to the heap, which Go never moves, so the host may write the
// return slots after it has re-entered the module through
// proxy_on_memory_allocate.

//go:wasmimport env proxy_log
func proxy_log(level uint32, msg string) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxy_get_buffer_bytes(bufferType, start, maxSize uint32, returnData, returnSize *uint32) uint32

//go:wasmimport env proxy_get_header_map_pairs
func proxy_get_header_map_pairs(mapType uint32, returnData, returnSize *uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxy_get_header_map_value(mapType uint32, key string, returnData, returnSize *uint32) uint32

//go:wasmimport env proxy_replace_header_map_value
func proxy_replace_header_map_value(mapType uint32, key, value string) uint32

//go:wasmimport env proxy_remove_header_map_value
func proxy_remove_header_map_value(mapType uint32, key string) uint32

//go:wasmimport env proxy_send_local_response
func proxy_send_local_response(statusCode uint32, details string, body *byte, bodySize uint32, headers *byte, headersSize uint32, grpcStatus int32) uint32

//go:wasmimport env proxy_get_property
func proxy_get_property(path *byte, pathSize uint32, returnData, returnSize *uint32) uint32

//go:wasmimport env proxy_define_metric
func proxy_define_metric(metricType uint32, name string, returnID *uint32) uint32

//go:wasmimport env proxy_increment_metric
func proxy_increment_metric(metricID uint32, offset int64) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxy_set_buffer_bytes(bufferType, start, size uint32, data *byte, dataSize uint32) uint32

//go:wasmimport env proxy_set_tick_period_milliseconds
func proxy_set_tick_period_milliseconds(period uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxy_set_effective_context(contextID uint32) uint32

//go:wasmimport env proxy_close_stream
func proxy_close_stream(streamType uint32) uint32

//go:wasmimport env proxy_call_foreign_function
func proxy_call_foreign_function(name string, args *byte, argsSize uint32, returnData, returnSize *uint32) uint32

//go:wasmimport env proxy_get_shared_data
func proxy_get_shared_data(key string, returnData, returnSize, returnCAS *uint32) uint32

//go:wasmimport env proxy_set_shared_data
func proxy_set_shared_data(key string, value *byte, valueSize, cas uint32) uint32
