// The request-headers hook of the nativefloor build (floor_on.go): what a
// cached allow costs Envoy when nothing enters Go. It reads what a check
// in C would read at least (the request's headers, for the token, and the
// route's name) and makes a cached allow's edits: the token removed, an
// identity header and the route marker set. It checks nothing: never a
// shipped build.
#ifdef DP_FLOOR
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dp_abi.h"
#include "dp_stream.h"

enum { dp_floor_max_headers = 256 };

static bool dp_floor_is(dp_buffer b, const char* s) {
	size_t n = strlen(s);
	return b.length == n && memcmp(b.ptr, s, n) == 0;
}

static dp_buffer dp_floor_text(const char* s) { return (dp_buffer){s, strlen(s)}; }

int envoy_dynamic_module_on_http_filter_request_headers(uintptr_t host, uintptr_t module, bool end) {
	dp_stream* s = dp_stream_of(module);
	if (s->checked) return 0;
	s->checked = 1;
	size_t n = dp_headers_size(host, dp_request_headers);
	if (n == 0 || n > dp_floor_max_headers) return 0;
	dp_header hs[dp_floor_max_headers];
	if (!dp_headers(host, dp_request_headers, hs)) return 0;
	bool token = false;
	for (size_t i = 0; i < n; i++) {
		dp_buffer k = {hs[i].key_ptr, hs[i].key_length};
		if (dp_floor_is(k, "authorization")) token = true;
	}
	dp_buffer route = {0};
	if (!dp_attribute_string(host, dp_attr_xds_route_name, &route)) route = dp_floor_text("");
	if (token) dp_set_header(host, dp_request_headers, dp_floor_text("authorization"), (dp_buffer){0});
	dp_set_header(host, dp_request_headers, dp_floor_text("x-directpipe-identity"), dp_floor_text("floor"));
	if (route.length > 0) dp_set_header(host, dp_request_headers, dp_floor_text("x-directpipe-route"), route);
	return 0;
}
#endif
