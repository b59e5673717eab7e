//go:build wasip1

// Package abihost binds package gate's host interfaces to the Proxy-Wasm
// ABI: each method is one host call, made on the context whose callback is
// running.
package abihost

import (
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/gate"
	"github.com/directpipe/directpipe/filter/proxywasm"
)

// Host is the Proxy-Wasm host; it holds no state of its own.
type Host struct{}

var _ gate.ModuleHost = Host{}

func (Host) Log(level gate.Level, msg string) { proxywasm.Log(proxywasm.LogLevel(level), msg) }

func (Host) PluginConfiguration() ([]byte, error) { return proxywasm.PluginConfiguration() }

func (Host) DefineCounter(name string) { proxywasm.CounterID(name) }

func (Host) Count(name string) { proxywasm.Count(name) }

func (Host) AddCount(name string, n uint64) {
	if id, ok := proxywasm.CounterID(name); ok && n > 0 {
		proxywasm.IncrementMetric(id, int64(n))
	}
}

func (Host) VerifySignature(hash string, spki, sig, signed []byte) (bool, error) {
	return proxywasm.VerifySignature(hash, spki, sig, signed)
}

// ClientAddress reads the source.address property: the downstream
// connection's remote address, which the HCM replaces with the address
// from X-Forwarded-For when the listener trusts hops in front of it.
func (Host) ClientAddress() (string, error) {
	v, err := proxywasm.GetProperty("source", "address")
	return string(v), err
}

func (Host) RootID() (string, error) {
	v, err := proxywasm.GetProperty("plugin_root_id")
	return string(v), err
}

func (Host) RequestHeaders() ([][2]string, error) {
	return proxywasm.GetHeaders(proxywasm.MapRequestHeaders)
}

// RouteName reads the xds.route_name property: Envoy answers NotFound when
// no route matched and "" for a route without a name.
func (Host) RouteName() (string, bool) {
	v, err := proxywasm.GetProperty("xds", "route_name")
	if err != nil {
		return "", false
	}
	return string(v), true
}

// RoutePolicy reads the route's auth setting from its metadata: Envoy
// answers NotFound when no route matched or the route has none.
func (Host) RoutePolicy() (string, bool) {
	v, err := proxywasm.GetProperty("xds", "route_metadata", "filter_metadata", contract.RouteMetadataNamespace, contract.RouteMetadataPolicy)
	if err != nil {
		return "", false
	}
	return string(v), true
}

func (Host) RemoveRequestHeader(name string) error {
	return proxywasm.RemoveHeader(proxywasm.MapRequestHeaders, name)
}

func (Host) ReplaceRequestHeader(name, value string) error {
	return proxywasm.ReplaceHeader(proxywasm.MapRequestHeaders, name, value)
}

func (Host) SendLocalResponse(status int, details string, body []byte, headers [][2]string) error {
	return proxywasm.SendLocalResponse(uint32(status), details, body, headers, -1)
}

func (Host) SetTickPeriod(ms uint32) error { return proxywasm.SetTickPeriod(ms) }

func (Host) DownstreamData(start, max uint32) ([]byte, error) {
	return proxywasm.GetBufferBytesAt(proxywasm.BufferDownstreamData, start, max)
}

func (Host) ReplaceDownstreamData(size uint32, data []byte) error {
	return proxywasm.SetBufferBytes(proxywasm.BufferDownstreamData, 0, size, data)
}

func (Host) SetConnectionFilterState(key, value string) error {
	return proxywasm.SetEnvoyFilterState(key, value)
}

func (Host) CloseDownstream() error { return proxywasm.CloseStream(proxywasm.StreamDownstream) }

func (Host) SetEffectiveContext(id uint32) error { return proxywasm.SetEffectiveContext(id) }

func (Host) SharedData(key string) ([]byte, uint32, error) { return proxywasm.GetSharedData(key) }

func (Host) SetSharedData(key string, value []byte, cas uint32) (bool, error) {
	return proxywasm.SetSharedData(key, value, cas)
}
