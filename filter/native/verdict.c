// The verdict table (verdict.h) and the request-headers hook that
// consults it before entering Go.
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dp_stream.h"
#include "verdict.h"

dp_config* dp_config_new(uintptr_t handle, uint32_t nworkers) {
	dp_config* c = calloc(1, sizeof(dp_config));
	if (!c) return NULL;
	c->handle = handle;
	c->tables = calloc(nworkers, sizeof(dp_verdict_table));
	if (c->tables) c->nworkers = nworkers;
	return c;
}

void dp_config_free(dp_config* c) {
	if (!c) return;
	for (uint32_t w = 0; w < c->nworkers; w++)
		for (int i = 0; i < dp_verdict_entries; i++) free(c->tables[w].slots[i]);
	free(c->tables);
	free(c);
}

dp_verdict_table* dp_config_table(dp_config* c, uint32_t worker) {
	if (!c || worker >= c->nworkers) return NULL;
	return &c->tables[worker];
}

dp_verdict* dp_verdict_new(void) { return calloc(1, sizeof(dp_verdict)); }

// keep copies b into the entry's bytes; false when they are full.
static bool keep(dp_verdict* v, dp_buffer b, dp_span* out) {
	if (b.length > dp_verdict_max_bytes - v->nbytes) return false;
	if (b.length) memcpy(v->bytes + v->nbytes, b.ptr, b.length);
	*out = (dp_span){v->nbytes, (uint32_t)b.length};
	v->nbytes += (uint32_t)b.length;
	return true;
}

bool dp_verdict_set_route(dp_verdict* v, dp_buffer route, bool present) {
	v->route_present = present;
	return keep(v, present ? route : (dp_buffer){0}, &v->route);
}

bool dp_verdict_set_tag(dp_verdict* v, dp_buffer tag, bool present) {
	v->tag_present = present;
	return keep(v, present ? tag : (dp_buffer){0}, &v->tag);
}

bool dp_verdict_add_read(dp_verdict* v, dp_buffer name, dp_buffer value, bool present) {
	if (v->nreads == dp_verdict_max_reads) return false;
	dp_verdict_read* r = &v->reads[v->nreads];
	r->present = present;
	if (!keep(v, name, &r->name) || !keep(v, present ? value : (dp_buffer){0}, &r->value)) return false;
	v->nreads++;
	return true;
}

bool dp_verdict_add_edit(dp_verdict* v, dp_buffer name, dp_buffer value, bool remove) {
	if (v->nedits == dp_verdict_max_edits) return false;
	dp_verdict_edit* e = &v->edits[v->nedits];
	e->remove = remove;
	if (!keep(v, name, &e->name) || !keep(v, remove ? (dp_buffer){0} : value, &e->value)) return false;
	v->nedits++;
	return true;
}

bool dp_verdict_add_counter(dp_verdict* v, size_t id, uint64_t n) {
	if (v->ncounters == dp_verdict_max_counters) return false;
	v->counters[v->ncounters++] = (dp_verdict_counter){id, n};
	return true;
}

void dp_verdict_set_deadlines(dp_verdict* v, int64_t mono, int64_t real) {
	v->mono_deadline = mono;
	v->real_deadline = real;
}

static bool span_is(const dp_verdict* v, dp_span s, const char* p, size_t n) {
	return s.len == n && (n == 0 || memcmp(v->bytes + s.off, p, n) == 0);
}

static bool spans_equal(const dp_verdict* a, dp_span x, const dp_verdict* b, dp_span y) {
	return x.len == y.len && (x.len == 0 || memcmp(a->bytes + x.off, b->bytes + y.off, x.len) == 0);
}

// same_inputs: a and b were decided on the same route, tag and reads.
static bool same_inputs(const dp_verdict* a, const dp_verdict* b) {
	if (a->route_present != b->route_present || !spans_equal(a, a->route, b, b->route)) return false;
	if (a->tag_present != b->tag_present || !spans_equal(a, a->tag, b, b->tag)) return false;
	if (a->nreads != b->nreads) return false;
	for (uint32_t i = 0; i < a->nreads; i++) {
		const dp_verdict_read *x = &a->reads[i], *y = &b->reads[i];
		if (x->present != y->present || !spans_equal(a, x->name, b, y->name) ||
			!spans_equal(a, x->value, b, y->value))
			return false;
	}
	return true;
}

void dp_verdict_insert(dp_verdict_table* t, dp_verdict* v) {
	if (!t || !v) {
		free(v);
		return;
	}
	int64_t mono = dp_verdict_mono_now(), real = dp_verdict_real_now();
	int slot = -1;
	for (int i = 0; i < dp_verdict_entries; i++) {
		dp_verdict* e = t->slots[i];
		if (e && same_inputs(e, v)) {
			slot = i;
			break;
		}
		if (slot < 0 && (!e || e->mono_deadline <= mono || e->real_deadline <= real)) slot = i;
	}
	if (slot < 0) {
		slot = (int)t->next;
		t->next = (t->next + 1) % dp_verdict_entries;
	}
	free(t->slots[slot]);
	t->slots[slot] = v;
}

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

// name_is compares a header name ASCII case-insensitively, as Go's
// strings.EqualFold does for the ASCII names the check asks for (the
// caller refuses any request with a byte past ASCII in a name).
static bool name_is(const dp_verdict* v, dp_span s, const char* p, size_t n) {
	if (s.len != n) return false;
	const char* q = v->bytes + s.off;
	for (size_t i = 0; i < n; i++)
		if (lower(q[i]) != lower(p[i])) return false;
	return true;
}

// read_matches: the request's headers give read r what the check saw. A
// name repeated in the request never matches (Go joins the values; the
// table does not).
static bool read_matches(const dp_verdict* v, const dp_verdict_read* r, const dp_header* hs, size_t n) {
	const dp_header* found = NULL;
	for (size_t i = 0; i < n; i++) {
		if (!name_is(v, r->name, hs[i].key_ptr, hs[i].key_length)) continue;
		if (found) return false;
		found = &hs[i];
	}
	if (!r->present) return found == NULL;
	return found && span_is(v, r->value, found->value_ptr, found->value_length);
}

const dp_verdict* dp_verdict_find(const dp_verdict_table* t, const dp_header* hs, size_t n,
	bool route_present, dp_buffer route, bool tag_present, dp_buffer tag, int64_t mono_now, int64_t real_now) {
	if (!t || n == 0 || n > dp_verdict_max_headers) return NULL;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < hs[i].key_length; j++)
			if ((unsigned char)hs[i].key_ptr[j] >= 0x80) return NULL;
	for (int i = 0; i < dp_verdict_entries; i++) {
		const dp_verdict* e = t->slots[i];
		if (!e || e->mono_deadline <= mono_now || e->real_deadline <= real_now) continue;
		if (e->route_present != route_present || (route_present && !span_is(e, e->route, route.ptr, route.length)))
			continue;
		if (e->tag_present != tag_present || (tag_present && !span_is(e, e->tag, tag.ptr, tag.length))) continue;
		bool all = true;
		for (uint32_t k = 0; k < e->nreads && all; k++) all = read_matches(e, &e->reads[k], hs, n);
		if (all) return e;
	}
	return NULL;
}

static int64_t clock_ns(clockid_t id) {
	struct timespec ts;
	if (clock_gettime(id, &ts) != 0) return INT64_MAX; // no time: every entry has expired
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t dp_verdict_mono_now(void) { return clock_ns(CLOCK_MONOTONIC); }
int64_t dp_verdict_real_now(void) { return clock_ns(CLOCK_REALTIME); }

#ifndef DP_FLOOR
static const char dp_policy_ns[] = "directpipe", dp_policy_key[] = "policy";

// replay makes an entry's edits and counts. It reports false if an edit
// failed: the request then enters Go, which reads whatever is on it as
// the client's (a removed token is a missing token there, never a pass).
static bool replay(uintptr_t host, const dp_config* c, const dp_verdict* e) {
	for (uint32_t i = 0; i < e->nedits; i++) {
		const dp_verdict_edit* ed = &e->edits[i];
		dp_buffer name = {e->bytes + ed->name.off, ed->name.len};
		dp_buffer value = ed->remove ? (dp_buffer){0} : (dp_buffer){e->bytes + ed->value.off, ed->value.len};
		if (!dp_set_header(host, dp_request_headers, name, value)) return false;
	}
	for (uint32_t i = 0; i < e->ncounters; i++) dp_increment_counter(host, e->counters[i].id, e->counters[i].n);
	if (c->replays_ok) dp_increment_counter(host, c->replays, 1);
	return true;
}

// dp_verdict_try replays a stored verdict for this request if there is
// one; false means the request goes to the Go check.
static bool dp_verdict_try(uintptr_t host, dp_stream* s) {
	dp_config* c = dp_stream_config(s);
	dp_verdict_table* t = dp_config_table(c, dp_worker_index(host));
	if (!t) return false;
	bool any = false;
	for (int i = 0; i < dp_verdict_entries && !any; i++) any = t->slots[i] != NULL;
	if (!any) return false;
	size_t n = dp_headers_size(host, dp_request_headers);
	if (n == 0 || n > dp_verdict_max_headers) return false;
	dp_header hs[dp_verdict_max_headers];
	if (!dp_headers(host, dp_request_headers, hs)) return false;
	dp_buffer route = {0}, tag = {0};
	bool route_present = dp_attribute_string(host, dp_attr_xds_route_name, &route);
	bool tag_present = dp_route_metadata_string(host, (dp_buffer){dp_policy_ns, sizeof dp_policy_ns - 1},
		(dp_buffer){dp_policy_key, sizeof dp_policy_key - 1}, &tag);
	const dp_verdict* e = dp_verdict_find(t, hs, n, route_present, route, tag_present, tag,
		dp_verdict_mono_now(), dp_verdict_real_now());
	return e && replay(host, c, e);
}

int dp_go_http_request_headers(uintptr_t host, uintptr_t module, bool end);

int envoy_dynamic_module_on_http_filter_request_headers(uintptr_t host, uintptr_t module, bool end) {
	dp_stream* s = dp_stream_of(module);
	if (!s->checked && dp_verdict_try(host, s)) {
		s->checked = 1;
		return 0;
	}
	return dp_go_http_request_headers(host, module, end);
}
#endif
