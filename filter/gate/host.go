// Package gate is the handshake modules' logic between the host's
// callbacks and the auth core: what an HTTP stream's request headers or a
// tcp connection's first bytes turn into (headers rewritten, a local
// reply, a connection sent to the deny listener or closed). It calls the
// host only through the interfaces below, so every path is tested natively
// with a fake host; the module mains bind them to the Proxy-Wasm ABI.
package gate

// Level is a log level, numbered as in the Proxy-Wasm spec.
type Level uint32

const (
	LevelDebug Level = 1
	LevelInfo  Level = 2
	LevelWarn  Level = 3
	LevelError Level = 4
)

// Action is what a callback tells the host, numbered as in the spec: go on
// with the next filter, or hold the stream or connection.
type Action uint32

const (
	Continue Action = 0
	Pause    Action = 1
)

// Host is what every plugin needs from its host.
type Host interface {
	Log(level Level, msg string)
	// PluginConfiguration returns the plugin's configuration, empty when
	// it has none.
	PluginConfiguration() ([]byte, error)
	// DefineCounter makes a counter exist before its first increment.
	DefineCounter(name string)
	// Count adds one to a counter; it never fails a handshake.
	Count(name string)
	// AddGauge adds delta to a gauge, defining it on first use; it never
	// fails a handshake.
	AddGauge(name string, delta int64)
	// NodeID returns the Envoy's node id (the node.id property).
	NodeID() (string, error)
	// VerifySignature checks an RS* or ES* signature with the host's
	// crypto (see auth.HostVerifier); an error means it could not.
	VerifySignature(hash string, spki, sig, signed []byte) (bool, error)
	// ClientAddress returns the downstream address of the stream or
	// connection whose callback is running, as Envoy sees it
	// (source.address: "ip:port"). The gate reads it only for a route
	// with client lists, once per handshake.
	ClientAddress() (string, error)
	// SharedData reads an entry of the data every worker's VM of this
	// Envoy shares, with its compare-and-swap token; an absent entry is
	// empty, with no error.
	SharedData(key string) (value []byte, cas uint32, err error)
	// SetSharedData writes an entry if its token is still cas (0: write
	// anyway); false when another worker wrote it in between.
	SetSharedData(key string, value []byte, cas uint32) (bool, error)
}

// HTTPHost is the host of an HTTP stream, acting on the stream whose
// callback is running.
type HTTPHost interface {
	Host
	// RequestHeaders returns every request header, pseudo-headers
	// included, as name/value pairs in order, a repeated header once per
	// value. Proxy-Wasm's call for one header gives only its first value,
	// so a check reading headers one by one would not see a second line
	// of Sec-WebSocket-Protocol that the back end reads.
	RequestHeaders() ([][2]string, error)
	// RouteName returns the name of the route Envoy matched and whether
	// one matched; a route without a name reads as "".
	RouteName() (string, bool)
	// RoutePolicy returns the auth policy the matched route's metadata
	// names (contract.RouteMetadataPolicy), "" for a public route, and
	// whether the route carries one.
	RoutePolicy() (string, bool)
	// RemoveRequestHeader removes every value of a header; an absent
	// header is no error.
	RemoveRequestHeader(name string) error
	// ReplaceRequestHeader sets a header, replacing every value it had.
	ReplaceRequestHeader(name, value string) error
	// SendLocalResponse answers the request without the upstream.
	SendLocalResponse(status int, details string, body []byte, headers [][2]string) error
}

// TCPHost is the host of a network filter, acting on the connection whose
// callback is running (or the one SetEffectiveContext chose).
type TCPHost interface {
	Host
	// SetTickPeriod asks for a tick on the root context every period
	// milliseconds.
	SetTickPeriod(ms uint32) error
	// DownstreamData returns at most max bytes of the data received,
	// from byte start on.
	DownstreamData(start, max uint32) ([]byte, error)
	// ReplaceDownstreamData replaces the first size bytes received with
	// data.
	ReplaceDownstreamData(size uint32, data []byte) error
	// SetConnectionFilterState sets a filter state object that lives as
	// long as the connection.
	SetConnectionFilterState(key, value string) error
	// CloseDownstream closes the client's connection.
	CloseDownstream() error
	// SetEffectiveContext makes later calls act on another context.
	SetEffectiveContext(id uint32) error
}

// TCPResponder is a TCPHost that can write to its client, as a native
// network filter can and a Proxy-Wasm one cannot: a denial is then
// answered on the connection itself, with nothing of the client's bytes
// going further.
type TCPResponder interface {
	// Respond drops what the client has sent, writes data to it, and
	// closes the connection once data is written.
	Respond(data []byte) error
}
