// An HTTP stream's state as Envoy holds it: C memory, made and freed by
// C hooks (hooks.c), so that creating and destroying a stream the module
// keeps nothing for never enters the Go runtime. Go runs only in the
// request-headers hook, once per stream.
#ifndef DP_STREAM_H
#define DP_STREAM_H
#include <stdint.h>

#include "verdict.h"

typedef struct {
	uintptr_t config;  // the filter config: a dp_config (verdict.h)
	uintptr_t handle;  // the Go state's cgo.Handle while the gate holds some of it, else 0
	int checked;       // set once the request headers have been seen
} dp_stream;

// dp_stream_of is the stream state behind Envoy's module filter handle.
static inline dp_stream* dp_stream_of(uintptr_t module) { return (dp_stream*)module; }

// dp_config_of is the config behind Envoy's module config handle.
static inline dp_config* dp_config_of(uintptr_t module_config) { return (dp_config*)module_config; }

static inline dp_config* dp_stream_config(dp_stream* s) { return dp_config_of(s->config); }

#endif
