// The network filter's per-chunk hooks, in C for the reason hooks.c gives:
// Envoy calls the read hook for every chunk a client sends and the write
// hook for every chunk sent to it, a WebSocket's frames included. Before
// the handshake is decided the read hook hands the bytes to Go; after it,
// it returns Continue without entering Go, and the write hook always does.
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "dp_abi.h"

// Go's side of the read hook (network.go).
extern int dp_net_undecided_read(uintptr_t host, uintptr_t conn, size_t length, bool end_stream);

#ifdef DP_PROBE
// With the probe build, the read hook counts its calls, which the Go side
// reads (dp_net_read_calls) to show how many of them entered Go.
static uint64_t dp_net_read_call_count;
uint64_t dp_net_read_calls(void) { return __atomic_load_n(&dp_net_read_call_count, __ATOMIC_RELAXED); }
#define DP_COUNT_READ_CALL() __atomic_fetch_add(&dp_net_read_call_count, 1, __ATOMIC_RELAXED)
#else
#define DP_COUNT_READ_CALL()
#endif

int envoy_dynamic_module_on_network_filter_read(uintptr_t host, uintptr_t module, size_t length, bool end_stream) {
	DP_COUNT_READ_CALL();
	dp_conn* c = (dp_conn*)module;
	if (c->decided) return 0;
	return dp_net_undecided_read(host, module, length, end_stream);
}

int envoy_dynamic_module_on_network_filter_write(uintptr_t host, uintptr_t module, size_t length, bool end_stream) {
	return 0;
}

// Connection events need nothing: the state goes when Envoy destroys the
// filter. Watermarks, callouts and the config's schedules are never asked
// for (a connection's schedule, its head timeout, is Go: network.go).
void envoy_dynamic_module_on_network_filter_event(uintptr_t host, uintptr_t module, int event) {}
void envoy_dynamic_module_on_network_filter_above_write_buffer_high_watermark(uintptr_t host, uintptr_t module) {}
void envoy_dynamic_module_on_network_filter_below_write_buffer_low_watermark(uintptr_t host, uintptr_t module) {}
void envoy_dynamic_module_on_network_filter_http_callout_done(uintptr_t host, uintptr_t module) {}
void envoy_dynamic_module_on_network_filter_config_scheduled(uintptr_t config) {}

dp_conn* dp_conn_new(uintptr_t handle) {
	dp_conn* c = calloc(1, sizeof(dp_conn));
	if (c) c->handle = handle;
	return c;
}

void dp_conn_free(dp_conn* c) { free(c); }
