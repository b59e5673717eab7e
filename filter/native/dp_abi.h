// Our declarations of Envoy 1.40's dynamic-module ABI (v0.2.0), written from
// source/extensions/dynamic_modules/abi/abi.h at tag v1.40.0, and thin
// wrappers that check each weak callback before calling it.
#pragma once

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

// Envoy keeps this after the call returns, so it lives in C memory.
// dp_abi_version is compared with Envoy's own (v0.2.0 for 1.40); a mismatch
// is only a warning in Envoy's log.
static const char dp_abi_version[] = "v0.2.0";
static const char* dp_abi_version_ptr(void) { return dp_abi_version; }

// Envoy's header map selector.
enum { dp_request_headers = 0, dp_response_headers = 2 };
// Envoy's metadata source selector: the matched route's metadata.
enum { dp_metadata_route = 1 };
// Attribute ids (envoy_dynamic_module_type_attribute_id), by their
// position in the header's enum.
enum { dp_attr_source_address = 24, dp_attr_xds_route_name = 61 };

__attribute__((weak)) size_t envoy_dynamic_module_callback_http_get_headers_size(uintptr_t filter,
	int header_type);
__attribute__((weak)) bool envoy_dynamic_module_callback_http_get_headers(uintptr_t filter,
	int header_type, dp_header* result);
__attribute__((weak)) bool envoy_dynamic_module_callback_http_set_header(uintptr_t filter,
	int header_type, dp_buffer key, dp_buffer value);
__attribute__((weak)) void envoy_dynamic_module_callback_http_send_response(uintptr_t filter,
	uint32_t status, dp_header* headers, size_t headers_size, dp_buffer body, dp_buffer details);
__attribute__((weak)) bool envoy_dynamic_module_callback_http_filter_get_attribute_string(
	uintptr_t filter, int attribute_id, dp_buffer* result);
__attribute__((weak)) bool envoy_dynamic_module_callback_http_get_metadata_string(uintptr_t filter,
	int source, dp_buffer ns, dp_buffer key, dp_buffer* result);
__attribute__((weak)) int envoy_dynamic_module_callback_http_filter_config_define_counter(
	uintptr_t config, dp_buffer name, dp_buffer* label_names, size_t label_names_length,
	size_t* counter_id);
__attribute__((weak)) int envoy_dynamic_module_callback_http_filter_increment_counter(
	uintptr_t filter, size_t id, dp_buffer* label_values, size_t label_values_length,
	uint64_t value);
__attribute__((weak)) uint32_t envoy_dynamic_module_callback_http_filter_get_worker_index(
	uintptr_t filter);
__attribute__((weak)) uint32_t envoy_dynamic_module_callback_get_concurrency(void);
__attribute__((weak)) void envoy_dynamic_module_callback_log(int level, dp_buffer message);
__attribute__((weak)) bool envoy_dynamic_module_callback_log_enabled(int level);

static size_t dp_headers_size(uintptr_t filter, int header_type) {
	if (!envoy_dynamic_module_callback_http_get_headers_size) return 0;
	return envoy_dynamic_module_callback_http_get_headers_size(filter, header_type);
}

static bool dp_headers(uintptr_t filter, int header_type, dp_header* result) {
	if (!envoy_dynamic_module_callback_http_get_headers) return false;
	return envoy_dynamic_module_callback_http_get_headers(filter, header_type, result);
}

// A null value removes the header.
static bool dp_set_header(uintptr_t filter, int header_type, dp_buffer key, dp_buffer value) {
	if (!envoy_dynamic_module_callback_http_set_header) return false;
	return envoy_dynamic_module_callback_http_set_header(filter, header_type, key, value);
}

static bool dp_send_response(uintptr_t filter, uint32_t status, dp_header* headers, size_t n,
	dp_buffer body, dp_buffer details) {
	if (!envoy_dynamic_module_callback_http_send_response) return false;
	envoy_dynamic_module_callback_http_send_response(filter, status, headers, n, body, details);
	return true;
}

static bool dp_attribute_string(uintptr_t filter, int id, dp_buffer* result) {
	if (!envoy_dynamic_module_callback_http_filter_get_attribute_string) return false;
	return envoy_dynamic_module_callback_http_filter_get_attribute_string(filter, id, result);
}

static bool dp_route_metadata_string(uintptr_t filter, dp_buffer ns, dp_buffer key, dp_buffer* result) {
	if (!envoy_dynamic_module_callback_http_get_metadata_string) return false;
	return envoy_dynamic_module_callback_http_get_metadata_string(filter, dp_metadata_route, ns, key, result);
}

// dp_define_counter returns Envoy's metrics result (0 is success).
static int dp_define_counter(uintptr_t config, dp_buffer name, size_t* id) {
	if (!envoy_dynamic_module_callback_http_filter_config_define_counter) return -1;
	return envoy_dynamic_module_callback_http_filter_config_define_counter(config, name, NULL, 0, id);
}

static int dp_increment_counter(uintptr_t filter, size_t id, uint64_t value) {
	if (!envoy_dynamic_module_callback_http_filter_increment_counter) return -1;
	return envoy_dynamic_module_callback_http_filter_increment_counter(filter, id, NULL, 0, value);
}

// Labelled stats (Envoy 1.40 takes label names when a stat is defined and
// their values with each update): the per-identity stats gate names while
// streams run, which Envoy would drop as names made after the config was
// created. Envoy renders one as <name>.<label>.<value>..., and its
// Prometheus output as <name>{<label>="<value>"}.
__attribute__((weak)) int envoy_dynamic_module_callback_http_filter_config_define_gauge(
	uintptr_t config, dp_buffer name, dp_buffer* label_names, size_t label_names_length,
	size_t* gauge_id);
__attribute__((weak)) int envoy_dynamic_module_callback_http_filter_set_gauge(uintptr_t filter,
	size_t id, dp_buffer* label_values, size_t label_values_length, uint64_t value);

static int dp_define_labelled_counter(uintptr_t config, dp_buffer name, dp_buffer* labels, size_t n,
	size_t* id) {
	if (!envoy_dynamic_module_callback_http_filter_config_define_counter) return -1;
	return envoy_dynamic_module_callback_http_filter_config_define_counter(config, name, labels, n, id);
}

static int dp_increment_labelled_counter(uintptr_t filter, size_t id, dp_buffer* values, size_t n,
	uint64_t value) {
	if (!envoy_dynamic_module_callback_http_filter_increment_counter) return -1;
	return envoy_dynamic_module_callback_http_filter_increment_counter(filter, id, values, n, value);
}

static int dp_define_gauge(uintptr_t config, dp_buffer name, dp_buffer* labels, size_t n, size_t* id) {
	if (!envoy_dynamic_module_callback_http_filter_config_define_gauge) return -1;
	return envoy_dynamic_module_callback_http_filter_config_define_gauge(config, name, labels, n, id);
}

static int dp_set_gauge(uintptr_t filter, size_t id, dp_buffer* values, size_t n, uint64_t value) {
	if (!envoy_dynamic_module_callback_http_filter_set_gauge) return -1;
	return envoy_dynamic_module_callback_http_filter_set_gauge(filter, id, values, n, value);
}

// dp_worker_index is UINT32_MAX when Envoy cannot say.
static uint32_t dp_worker_index(uintptr_t filter) {
	if (!envoy_dynamic_module_callback_http_filter_get_worker_index) return UINT32_MAX;
	return envoy_dynamic_module_callback_http_filter_get_worker_index(filter);
}

static uint32_t dp_concurrency(void) {
	if (!envoy_dynamic_module_callback_get_concurrency) return 0;
	return envoy_dynamic_module_callback_get_concurrency();
}

// Envoy's log levels: trace, debug, info, warn, error, critical.
static void dp_log(int level, dp_buffer message) {
	if (!envoy_dynamic_module_callback_log || !envoy_dynamic_module_callback_log_enabled) return;
	if (!envoy_dynamic_module_callback_log_enabled(level)) return;
	envoy_dynamic_module_callback_log(level, message);
}

// The network filter's half of the ABI. A connection's state lives in C
// memory (dp_conn) so that the read hook, which Envoy calls for every chunk
// the client sends, can see that the handshake is decided without
// entering Go (see nethooks.c).
typedef struct {
	uintptr_t handle; // the Go state's cgo.Handle
	int decided;      // set on the connection's worker thread only
} dp_conn;

// Envoy's connection close types.
enum { dp_close_flush_write = 0, dp_close_no_flush = 1 };

__attribute__((weak)) size_t envoy_dynamic_module_callback_network_filter_get_read_buffer_size(uintptr_t filter);
__attribute__((weak)) size_t envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(
	uintptr_t filter);
__attribute__((weak)) bool envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(uintptr_t filter,
	dp_buffer* result);
// Envoy 1.40 answers drain and prepend with a bool; nothing reads it.
__attribute__((weak)) void envoy_dynamic_module_callback_network_filter_drain_read_buffer(uintptr_t filter,
	size_t length);
__attribute__((weak)) void envoy_dynamic_module_callback_network_filter_prepend_read_buffer(uintptr_t filter,
	dp_buffer data);
__attribute__((weak)) void envoy_dynamic_module_callback_network_filter_write(uintptr_t filter, dp_buffer data,
	bool end_stream);
__attribute__((weak)) void envoy_dynamic_module_callback_network_filter_close(uintptr_t filter, int close_type);
__attribute__((weak)) bool envoy_dynamic_module_callback_network_filter_get_remote_address(uintptr_t filter,
	dp_buffer* address, uint32_t* port);
__attribute__((weak)) int envoy_dynamic_module_callback_network_filter_config_define_counter(uintptr_t config,
	dp_buffer name, size_t* counter_id);
__attribute__((weak)) int envoy_dynamic_module_callback_network_filter_increment_counter(uintptr_t filter,
	size_t id, uint64_t value);
__attribute__((weak)) uint32_t envoy_dynamic_module_callback_network_filter_get_worker_index(uintptr_t filter);

static size_t dp_net_read_size(uintptr_t filter) {
	if (!envoy_dynamic_module_callback_network_filter_get_read_buffer_size) return 0;
	return envoy_dynamic_module_callback_network_filter_get_read_buffer_size(filter);
}

static size_t dp_net_read_chunks_size(uintptr_t filter) {
	if (!envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size) return 0;
	return envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks_size(filter);
}

static bool dp_net_read_chunks(uintptr_t filter, dp_buffer* result) {
	if (!envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks) return false;
	return envoy_dynamic_module_callback_network_filter_get_read_buffer_chunks(filter, result);
}

static bool dp_net_drain(uintptr_t filter, size_t length) {
	if (!envoy_dynamic_module_callback_network_filter_drain_read_buffer) return false;
	envoy_dynamic_module_callback_network_filter_drain_read_buffer(filter, length);
	return true;
}

static bool dp_net_prepend(uintptr_t filter, dp_buffer data) {
	if (!envoy_dynamic_module_callback_network_filter_prepend_read_buffer) return false;
	envoy_dynamic_module_callback_network_filter_prepend_read_buffer(filter, data);
	return true;
}

static bool dp_net_write(uintptr_t filter, dp_buffer data, bool end_stream) {
	if (!envoy_dynamic_module_callback_network_filter_write) return false;
	envoy_dynamic_module_callback_network_filter_write(filter, data, end_stream);
	return true;
}

static bool dp_net_close(uintptr_t filter, int close_type) {
	if (!envoy_dynamic_module_callback_network_filter_close) return false;
	envoy_dynamic_module_callback_network_filter_close(filter, close_type);
	return true;
}

static bool dp_net_remote_address(uintptr_t filter, dp_buffer* address, uint32_t* port) {
	if (!envoy_dynamic_module_callback_network_filter_get_remote_address) return false;
	return envoy_dynamic_module_callback_network_filter_get_remote_address(filter, address, port);
}

static int dp_net_define_counter(uintptr_t config, dp_buffer name, size_t* id) {
	if (!envoy_dynamic_module_callback_network_filter_config_define_counter) return -1;
	return envoy_dynamic_module_callback_network_filter_config_define_counter(config, name, id);
}

static int dp_net_increment_counter(uintptr_t filter, size_t id, uint64_t value) {
	if (!envoy_dynamic_module_callback_network_filter_increment_counter) return -1;
	return envoy_dynamic_module_callback_network_filter_increment_counter(filter, id, value);
}

__attribute__((weak)) uintptr_t envoy_dynamic_module_callback_network_filter_scheduler_new(uintptr_t filter);
__attribute__((weak)) void envoy_dynamic_module_callback_network_filter_scheduler_commit(uintptr_t scheduler,
	uint64_t event_id);
__attribute__((weak)) void envoy_dynamic_module_callback_network_filter_scheduler_delete(uintptr_t scheduler);

// A scheduler posts an event to its connection's worker thread; any
// thread may commit one. Envoy's scheduler holds the connection weakly, so
// an event committed after the connection is gone is dropped.
static uintptr_t dp_net_scheduler_new(uintptr_t filter) {
	if (!envoy_dynamic_module_callback_network_filter_scheduler_new) return 0;
	return envoy_dynamic_module_callback_network_filter_scheduler_new(filter);
}

static void dp_net_scheduler_commit(uintptr_t scheduler, uint64_t event_id) {
	if (envoy_dynamic_module_callback_network_filter_scheduler_commit)
		envoy_dynamic_module_callback_network_filter_scheduler_commit(scheduler, event_id);
}

static void dp_net_scheduler_delete(uintptr_t scheduler) {
	if (envoy_dynamic_module_callback_network_filter_scheduler_delete)
		envoy_dynamic_module_callback_network_filter_scheduler_delete(scheduler);
}

static uint32_t dp_net_worker_index(uintptr_t filter) {
	if (!envoy_dynamic_module_callback_network_filter_get_worker_index) return UINT32_MAX;
	return envoy_dynamic_module_callback_network_filter_get_worker_index(filter);
}

// dp_conn_of is the connection state behind Envoy's module filter handle.
static dp_conn* dp_conn_of(uintptr_t module) { return (dp_conn*)module; }
