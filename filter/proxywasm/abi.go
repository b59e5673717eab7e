//go:build wasip1

package proxywasm

import (
	"errors"
	"fmt"
	"unsafe"
)

// Status is the host's return code (spec: proxy_status_t).
type Status uint32

const (
	StatusOK       Status = 0
	StatusNotFound Status = 1
	StatusBadArg   Status = 2
)

func (s Status) err(call string) error {
	switch s {
	case StatusOK:
		return nil
	case StatusNotFound:
		return fmt.Errorf("%s: %w", call, ErrNotFound)
	}
	return fmt.Errorf("%s: host status %d", call, uint32(s))
}

// ErrNotFound is the host's NotFound: a header, property or buffer that
// does not exist.
var ErrNotFound = errors.New("not found")

// Action is what a header callback tells the host to do next.
type Action uint32

const (
	ActionContinue Action = 0
	ActionPause    Action = 1
)

// MapType selects a header map.
type MapType uint32

const (
	MapRequestHeaders MapType = 0
)

// BufferType selects a buffer.
type BufferType uint32

const (
	BufferVMConfiguration     BufferType = 6
	BufferPluginConfiguration BufferType = 7
)

// LogLevel as in the spec.
type LogLevel uint32

const (
	LogTrace LogLevel = iota
	LogDebug
	LogInfo
	LogWarn
	LogError
	LogCritical
)

// MetricType as in the spec.
type MetricType uint32

const (
	MetricCounter MetricType = 0
)

// The host returns data in memory it obtains from proxy_on_memory_allocate.
// Those buffers are Go slices: they are kept here, reachable, from the
// allocation until Go has copied them out, so the garbage collector cannot
// reclaim them while the host holds only a raw pointer.
var pending = map[uintptr][]byte{}

// Allocate serves proxy_on_memory_allocate.
func Allocate(size uint32) unsafe.Pointer {
	if size == 0 {
		size = 1
	}
	buf := make([]byte, size)
	p := unsafe.Pointer(&buf[0])
	pending[uintptr(p)] = buf
	return p
}

// take copies a host-returned buffer out and releases it.
func take(p unsafe.Pointer, size uint32) []byte {
	if p == nil {
		return nil
	}
	buf, ok := pending[uintptr(p)]
	delete(pending, uintptr(p))
	if !ok || int(size) > len(buf) {
		// Not ours: copy what the host says is there.
		return append([]byte(nil), unsafe.Slice((*byte)(p), size)...)
	}
	return buf[:size:size]
}

func ptr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func strPtr(s string) unsafe.Pointer {
	if s == "" {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

// Log writes a line to Envoy's log at level.
func Log(level LogLevel, msg string) {
	proxy_log(uint32(level), strPtr(msg), uint32(len(msg)))
}

// GetBufferBytes reads a whole buffer (spec: proxy_get_buffer_bytes).
func GetBufferBytes(bt BufferType) ([]byte, error) {
	var data unsafe.Pointer
	var size uint32
	st := Status(proxy_get_buffer_bytes(uint32(bt), 0, ^uint32(0)>>1, unsafe.Pointer(&data), unsafe.Pointer(&size)))
	if err := st.err("proxy_get_buffer_bytes"); err != nil {
		return nil, err
	}
	return take(data, size), nil
}

// GetHeader returns one request header's value.
func GetHeader(mt MapType, key string) (string, error) {
	var data unsafe.Pointer
	var size uint32
	st := Status(proxy_get_header_map_value(uint32(mt), strPtr(key), uint32(len(key)), unsafe.Pointer(&data), unsafe.Pointer(&size)))
	if err := st.err("proxy_get_header_map_value"); err != nil {
		return "", err
	}
	return string(take(data, size)), nil
}

// GetHeaders returns every header of a map as name/value pairs.
func GetHeaders(mt MapType) ([][2]string, error) {
	var data unsafe.Pointer
	var size uint32
	st := Status(proxy_get_header_map_pairs(uint32(mt), unsafe.Pointer(&data), unsafe.Pointer(&size)))
	if err := st.err("proxy_get_header_map_pairs"); err != nil {
		return nil, err
	}
	return DecodePairs(take(data, size))
}

// ReplaceHeader sets a header, replacing any value it had.
func ReplaceHeader(mt MapType, key, value string) error {
	return Status(proxy_replace_header_map_value(uint32(mt), strPtr(key), uint32(len(key)), strPtr(value), uint32(len(value)))).err("proxy_replace_header_map_value")
}

// RemoveHeader removes every value of a header.
func RemoveHeader(mt MapType, key string) error {
	st := Status(proxy_remove_header_map_value(uint32(mt), strPtr(key), uint32(len(key))))
	if st == StatusNotFound {
		return nil
	}
	return st.err("proxy_remove_header_map_value")
}

// SendLocalResponse answers the request from the filter; the upstream is
// never contacted.
func SendLocalResponse(status uint32, details string, body []byte, headers [][2]string) error {
	hs := EncodePairs(headers)
	return Status(proxy_send_local_response(status, strPtr(details), uint32(len(details)), ptr(body), uint32(len(body)), ptr(hs), uint32(len(hs)), -1)).err("proxy_send_local_response")
}

// GetProperty reads a host property such as ["xds", "route_name"].
func GetProperty(path ...string) ([]byte, error) {
	var enc []byte
	for _, p := range path {
		enc = append(enc, p...)
		enc = append(enc, 0)
	}
	var data unsafe.Pointer
	var size uint32
	st := Status(proxy_get_property(ptr(enc), uint32(len(enc)), unsafe.Pointer(&data), unsafe.Pointer(&size)))
	if err := st.err("proxy_get_property"); err != nil {
		return nil, err
	}
	return take(data, size), nil
}

// DefineMetric registers a metric and returns its id.
func DefineMetric(mt MetricType, name string) (uint32, error) {
	var id uint32
	st := Status(proxy_define_metric(uint32(mt), strPtr(name), uint32(len(name)), unsafe.Pointer(&id)))
	return id, st.err("proxy_define_metric")
}

// IncrementMetric adds offset to a counter.
func IncrementMetric(id uint32, offset int64) error {
	return Status(proxy_increment_metric(id, offset)).err("proxy_increment_metric")
}
