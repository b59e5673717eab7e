// An HTTP stream's state as Envoy holds it: C memory, made and freed by
// C hooks (hooks.c), so that creating and destroying a stream the module
// keeps nothing for never enters the Go runtime. Go runs only in the
// request-headers hook, once per stream.
#ifndef DP_STREAM_H
#define DP_STREAM_H
#include <stdint.h>

typedef struct {
	uintptr_t config;  // the filter config's cgo.Handle
	uintptr_t handle;  // the Go state's cgo.Handle while the gate holds some of it, else 0
	int checked;       // set once the request headers have been seen
} dp_stream;

// dp_stream_of is the stream state behind Envoy's module filter handle.
static inline dp_stream* dp_stream_of(uintptr_t module) { return (dp_stream*)module; }

#endif
