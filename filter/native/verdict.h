// A per-worker table of handshake verdicts the Go check allowed, which
// the C request-headers hook replays without entering Go (verdict.c,
// verdict.go). An entry holds the exact inputs that decided the allow
// (the route's name and policy tag as Envoy gave them, and every request
// header the check read, with its value or its absence), the edits the
// check made, the counters it added to and two deadlines. A request is
// replayed only if every input is byte-for-byte the same and neither
// deadline has passed; anything else enters Go.
#ifndef DP_VERDICT_H
#define DP_VERDICT_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dp_abi.h"

// Bounds: entries per worker and filter config, and what one entry holds.
enum {
	dp_verdict_entries = 32,
	dp_verdict_max_reads = 24,
	dp_verdict_max_edits = 24,
	dp_verdict_max_counters = 8,
	dp_verdict_max_bytes = 4096,
	dp_verdict_max_headers = 256,
};

// A span of an entry's bytes.
typedef struct {
	uint32_t off, len;
} dp_span;

typedef struct {
	dp_span name, value;
	bool present;
} dp_verdict_read;

typedef struct {
	dp_span name, value;
	bool remove;
} dp_verdict_edit;

typedef struct {
	size_t id;
	uint64_t n;
} dp_verdict_counter;

typedef struct {
	// CLOCK_MONOTONIC and CLOCK_REALTIME deadlines in ns: the entry is
	// replayed only while both are in the future.
	int64_t mono_deadline, real_deadline;
	bool route_present, tag_present;
	dp_span route, tag;
	uint32_t nreads, nedits, ncounters, nbytes;
	dp_verdict_read reads[dp_verdict_max_reads];
	dp_verdict_edit edits[dp_verdict_max_edits];
	dp_verdict_counter counters[dp_verdict_max_counters];
	char bytes[dp_verdict_max_bytes];
} dp_verdict;

// One worker's table. Only that worker's thread reads or writes it.
typedef struct {
	dp_verdict* slots[dp_verdict_entries];
	uint32_t next; // the slot an insert evicts when none is free or expired
} dp_verdict_table;

// A filter config as the C hooks see it: Go's handle and one table per
// worker Envoy said it has.
typedef struct {
	uintptr_t handle;
	uint32_t nworkers;
	dp_verdict_table* tables;
	// replays counts the requests the tables answered, when Envoy
	// defined the counter.
	size_t replays;
	bool replays_ok;
} dp_config;

dp_config* dp_config_new(uintptr_t handle, uint32_t nworkers);
void dp_config_free(dp_config* c);
dp_verdict_table* dp_config_table(dp_config* c, uint32_t worker);

dp_verdict* dp_verdict_new(void);
bool dp_verdict_set_route(dp_verdict* v, dp_buffer route, bool present);
bool dp_verdict_set_tag(dp_verdict* v, dp_buffer tag, bool present);
bool dp_verdict_add_read(dp_verdict* v, dp_buffer name, dp_buffer value, bool present);
bool dp_verdict_add_edit(dp_verdict* v, dp_buffer name, dp_buffer value, bool remove);
bool dp_verdict_add_counter(dp_verdict* v, size_t id, uint64_t n);
void dp_verdict_set_deadlines(dp_verdict* v, int64_t mono, int64_t real);
// dp_verdict_insert hands v to the table, which frees it when it is
// replaced or evicted; an entry with the same inputs is replaced.
void dp_verdict_insert(dp_verdict_table* t, dp_verdict* v);

// dp_verdict_find returns the entry whose inputs are exactly these, and
// whose deadlines are after the given times, or NULL.
const dp_verdict* dp_verdict_find(const dp_verdict_table* t, const dp_header* hs, size_t n,
	bool route_present, dp_buffer route, bool tag_present, dp_buffer tag, int64_t mono_now, int64_t real_now);

int64_t dp_verdict_mono_now(void);
int64_t dp_verdict_real_now(void);

#endif
