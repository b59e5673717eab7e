//go:build wasip1

package proxywasm

import (
	"errors"
	"fmt"
	"math"
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
	BufferDownstreamData      BufferType = 2
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

// StreamType selects a stream or connection direction (spec:
// proxy_stream_type_t).
type StreamType uint32

const (
	StreamDownstream StreamType = 2
)

// MetricType as in the spec.
type MetricType uint32

const (
	MetricCounter MetricType = 0
)

// The host returns data in memory it obtains from proxy_on_memory_allocate:
// it calls the allocator, copies the data in, and writes the address and
// size into the caller's return slots. Those buffers are Go slices, so they
// are kept here, reachable, from the allocation until Go has taken them:
// between the two the host holds only a raw address, which the garbage
// collector does not see. Keys are the addresses the host was given, so a
// returned address is only ever looked up, never turned into a pointer.
var pending = map[uint32][]byte{}

// Allocate serves proxy_on_memory_allocate.
func Allocate(size uint32) unsafe.Pointer {
	buf := make([]byte, max(size, 1))
	p := unsafe.Pointer(unsafe.SliceData(buf))
	pending[uint32(uintptr(p))] = buf
	return p
}

// DropPending forgets buffers the host was given but never handed back, and
// says how many there were. Between two callbacks there should be none: the
// host fills a buffer within the host call that asked for it.
func DropPending() int {
	n := len(pending)
	if n > 0 {
		clear(pending)
	}
	return n
}

// ReleasePending runs DropPending where no buffer can legitimately be in
// flight (at the start of a callback) and logs what it found.
func ReleasePending() {
	if n := DropPending(); n > 0 {
		Log(LogWarn, fmt.Sprintf("%d host buffers were never returned", n))
	}
}

var errForeignMemory = errors.New("proxywasm: the host returned memory that proxy_on_memory_allocate did not give it")

// take returns a host-filled buffer and releases it.
func take(addr, size uint32) ([]byte, error) {
	if addr == 0 && size == 0 {
		return nil, nil
	}
	buf, ok := pending[addr]
	delete(pending, addr)
	if !ok || int(size) > len(buf) {
		return nil, errForeignMemory
	}
	return buf[:size:size], nil
}

// Log writes a line to Envoy's log at level.
func Log(level LogLevel, msg string) {
	proxy_log(uint32(level), msg)
}

// GetBufferBytes reads a whole buffer (spec: proxy_get_buffer_bytes).
func GetBufferBytes(bt BufferType) ([]byte, error) {
	// The host clamps the length to what the buffer holds.
	return GetBufferBytesN(bt, math.MaxInt32)
}

// PluginConfiguration reads the plugin's configuration; a plugin without
// one reads as empty.
func PluginConfiguration() ([]byte, error) {
	data, err := GetBufferBytes(BufferPluginConfiguration)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("cannot read the plugin configuration: %w", err)
	}
	return data, nil
}

// GetHeader returns the value of a header (spec:
// proxy_get_header_map_value); ErrNotFound when it is absent.
func GetHeader(mt MapType, key string) (string, error) {
	var addr, size uint32
	st := Status(proxy_get_header_map_value(uint32(mt), key, &addr, &size))
	if err := st.err("proxy_get_header_map_value"); err != nil {
		return "", err
	}
	b, err := take(addr, size)
	return string(b), err
}

// GetHeaders returns every header of a map as name/value pairs (spec:
// proxy_get_header_map_pairs).
func GetHeaders(mt MapType) ([][2]string, error) {
	var addr, size uint32
	st := Status(proxy_get_header_map_pairs(uint32(mt), &addr, &size))
	if err := st.err("proxy_get_header_map_pairs"); err != nil {
		return nil, err
	}
	b, err := take(addr, size)
	if err != nil {
		return nil, err
	}
	return DecodePairs(b)
}

// ReplaceHeader sets a header, replacing every value it had (spec:
// proxy_replace_header_map_value).
func ReplaceHeader(mt MapType, key, value string) error {
	return Status(proxy_replace_header_map_value(uint32(mt), key, value)).err("proxy_replace_header_map_value")
}

// RemoveHeader removes every value of a header (spec:
// proxy_remove_header_map_value); removing an absent header is no error.
func RemoveHeader(mt MapType, key string) error {
	st := Status(proxy_remove_header_map_value(uint32(mt), key))
	if st == StatusNotFound {
		return nil
	}
	return st.err("proxy_remove_header_map_value")
}

// SendLocalResponse answers the request from the filter (spec:
// proxy_send_local_response); the upstream is never contacted. A
// grpcStatus of -1 sends none.
func SendLocalResponse(status uint32, details string, body []byte, headers [][2]string, grpcStatus int32) error {
	hs := EncodePairs(headers)
	return Status(proxy_send_local_response(status, details,
		unsafe.SliceData(body), uint32(len(body)), unsafe.SliceData(hs), uint32(len(hs)), grpcStatus)).err("proxy_send_local_response")
}

// GetProperty reads a host property such as ["xds", "route_name"] (spec:
// proxy_get_property: path segments each followed by a NUL).
func GetProperty(path ...string) ([]byte, error) {
	var enc []byte
	for _, p := range path {
		enc = append(enc, p...)
		enc = append(enc, 0)
	}
	var addr, size uint32
	st := Status(proxy_get_property(unsafe.SliceData(enc), uint32(len(enc)), &addr, &size))
	if err := st.err("proxy_get_property"); err != nil {
		return nil, err
	}
	return take(addr, size)
}

// DefineMetric registers a metric and returns its id (spec:
// proxy_define_metric).
func DefineMetric(mt MetricType, name string) (uint32, error) {
	var id uint32
	st := Status(proxy_define_metric(uint32(mt), name, &id))
	return id, st.err("proxy_define_metric")
}

// IncrementMetric adds offset to a counter (spec: proxy_increment_metric).
func IncrementMetric(id uint32, offset int64) error {
	return Status(proxy_increment_metric(id, offset)).err("proxy_increment_metric")
}

// Count adds one to a counter, defining it on first use; ids are per VM,
// so they are cached here. A metric the host refuses is skipped: counting
// must never fail a handshake.
func Count(name string) {
	if id, ok := CounterID(name); ok {
		IncrementMetric(id, 1)
	}
}

var counterIDs = map[string]uint32{}

// CounterID returns the id of a counter, defining it on first use.
func CounterID(name string) (uint32, bool) {
	if id, ok := counterIDs[name]; ok {
		return id, true
	}
	id, err := DefineMetric(MetricCounter, name)
	if err != nil {
		return 0, false
	}
	counterIDs[name] = id
	return id, true
}

// GetBufferBytesN reads at most size bytes of a buffer from its start.
func GetBufferBytesN(bt BufferType, size uint32) ([]byte, error) {
	return GetBufferBytesAt(bt, 0, size)
}

// GetBufferBytesAt reads at most size bytes of a buffer from byte start.
func GetBufferBytesAt(bt BufferType, start, size uint32) ([]byte, error) {
	var addr, n uint32
	st := Status(proxy_get_buffer_bytes(uint32(bt), start, size, &addr, &n))
	if err := st.err("proxy_get_buffer_bytes"); err != nil {
		return nil, err
	}
	return take(addr, n)
}

// SetBufferBytes replaces size bytes from start with data (spec:
// proxy_set_buffer_bytes). Envoy supports start 0 (drain size bytes, then
// prepend data) and start at the end (append).
func SetBufferBytes(bt BufferType, start, size uint32, data []byte) error {
	return Status(proxy_set_buffer_bytes(uint32(bt), start, size, unsafe.SliceData(data), uint32(len(data)))).err("proxy_set_buffer_bytes")
}

// SetTickPeriod asks the host to call proxy_on_tick on the root context
// every period milliseconds (spec: proxy_set_tick_period_milliseconds).
func SetTickPeriod(ms uint32) error {
	return Status(proxy_set_tick_period_milliseconds(ms)).err("proxy_set_tick_period_milliseconds")
}

// SetEffectiveContext makes later calls act on another context, such as a
// connection from the root context's tick (spec:
// proxy_set_effective_context).
func SetEffectiveContext(contextID uint32) error {
	return Status(proxy_set_effective_context(contextID)).err("proxy_set_effective_context")
}

// CloseStream closes a stream or connection (spec: proxy_close_stream).
func CloseStream(st StreamType) error {
	return Status(proxy_close_stream(uint32(st))).err("proxy_close_stream")
}

// CallForeignFunction calls a host extension by name (spec:
// proxy_call_foreign_function) and returns its result.
func CallForeignFunction(name string, args []byte) ([]byte, error) {
	var addr, size uint32
	st := Status(proxy_call_foreign_function(name, unsafe.SliceData(args), uint32(len(args)), &addr, &size))
	if err := st.err("proxy_call_foreign_function " + name); err != nil {
		return nil, err
	}
	return take(addr, size)
}

// SetEnvoyFilterState sets a filter state object on the connection through
// Envoy's set_envoy_filter_state foreign function; Envoy builds the object
// with the factory registered under path (for example
// envoy.tcp_proxy.cluster, which tcp_proxy reads to pick its cluster).
func SetEnvoyFilterState(path, value string) error {
	_, err := CallForeignFunction("set_envoy_filter_state", encodeFilterStateArgs(path, value))
	return err
}

// VerifySignature checks a signature with Envoy's verify_signature
// foreign function (BoringSSL): hash is "sha256", "sha384" or "sha512",
// spki a DER SubjectPublicKeyInfo, sig PKCS #1 v1.5 for RSA or DER for
// ECDSA. An error means the host did not check it (no such function, a
// key it cannot import); false with no error is a signature that does
// not verify.
func VerifySignature(hash string, spki, sig, text []byte) (bool, error) {
	res, err := CallForeignFunction("verify_signature", encodeVerifyArgs(hash, spki, sig, text))
	if err != nil {
		return false, err
	}
	ok, _, err := decodeVerifyResult(res)
	return ok, err
}
