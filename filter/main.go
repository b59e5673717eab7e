//go:build wasip1

// Command filter is the directpipe handshake filter, a Proxy-Wasm (ABI
// 0.2.1) module built by the standard Go toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o bin/handshake.wasm ./filter
//
// It checks the caller once, on the request headers of the handshake, and
// exports no body, data or trailer callback: after the headers, Envoy never
// enters the VM for this stream again, whatever the stream carries.
package main

import (
	"encoding/json"
	"time"
	"unsafe"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/proxywasm"
)

func main() {}

// Package-level state is the Wasm ABI glue: the host drives the module by
// context ids, and the only place to keep per-context state is here. Each
// VM is single-threaded, so no locking is needed.
var (
	// rootConfig maps a root (plugin) context to its parsed configuration.
	rootConfig = map[uint32]*auth.Config{}
	// streamRoot maps an HTTP context to its root context.
	streamRoot = map[uint32]uint32{}
	metrics    = newMetricSet()
)

//go:wasmexport proxy_abi_version_0_2_1
func proxyABIVersion() {}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) unsafe.Pointer { return proxywasm.Allocate(size) }

//go:wasmexport proxy_on_vm_start
func proxyOnVMStart(rootID, vmConfigSize uint32) uint32 { return 1 }

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) uint32 {
	data, err := proxywasm.GetBufferBytes(proxywasm.BufferPluginConfiguration)
	if err != nil {
		proxywasm.Log(proxywasm.LogError, "directpipe: cannot read plugin configuration: "+err.Error())
		return 0
	}
	cfg, err := auth.ParseConfig(data)
	if err != nil {
		// Returning false makes Envoy reject this config; the previous one
		// keeps serving.
		proxywasm.Log(proxywasm.LogError, "directpipe: "+err.Error())
		return 0
	}
	rootConfig[rootID] = cfg
	return 1
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(contextID, parentID uint32) {
	if parentID != 0 {
		streamRoot[contextID] = parentID
	}
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(contextID, numHeaders, endOfStream uint32) uint32 {
	cfg := rootConfig[streamRoot[contextID]]
	if cfg == nil {
		return uint32(reject(auth.Decision{Status: 503, Reason: "filter_not_configured"}, "directpipe"))
	}
	route := routeName()
	req := auth.Request{
		Header: func(name string) (string, bool) {
			v, err := proxywasm.GetHeader(proxywasm.MapRequestHeaders, name)
			return v, err == nil
		},
	}
	req.Path, _ = proxywasm.GetHeader(proxywasm.MapRequestHeaders, ":path")
	d, policy := cfg.Check(route, req, time.Now())
	if !d.Allow {
		realm := "directpipe"
		if policy != nil {
			realm = policy.Realm
		}
		return uint32(reject(d, realm))
	}
	for _, h := range d.Remove {
		proxywasm.RemoveHeader(proxywasm.MapRequestHeaders, h)
	}
	for _, kv := range d.Set {
		proxywasm.ReplaceHeader(proxywasm.MapRequestHeaders, kv[0], kv[1])
	}
	if d.Path != "" {
		proxywasm.ReplaceHeader(proxywasm.MapRequestHeaders, ":path", d.Path)
	}
	if policy != nil {
		metrics.inc("directpipe_handshake_allowed")
	}
	return uint32(proxywasm.ActionContinue)
}

// routeName reads the name of the route Envoy matched; the control plane
// keys auth policies by it.
func routeName() string {
	if v, err := proxywasm.GetProperty("xds", "route_name"); err == nil {
		return string(v)
	}
	if v, err := proxywasm.GetProperty("route_name"); err == nil {
		return string(v)
	}
	return ""
}

type denial struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

var messages = map[string]string{
	auth.ReasonMissingToken:    "a token is required",
	auth.ReasonTokenTooLarge:   "the token is too large",
	auth.ReasonMalformedToken:  "the token is malformed",
	auth.ReasonBadSignature:    "the token signature does not verify",
	auth.ReasonExpiredToken:    "the token has expired",
	auth.ReasonNotYetValid:     "the token is not valid yet",
	auth.ReasonInvalidToken:    "the token is not valid",
	auth.ReasonUnknownAPIKey:   "the API key is not known",
	auth.ReasonRouteNotAllowed: "the route has no auth setting yet",
}

// reject answers locally; the reason is in the body and the details, the
// token is in neither.
func reject(d auth.Decision, realm string) proxywasm.Action {
	body, _ := json.Marshal(denial{Error: d.Reason, Message: messages[d.Reason]})
	headers := [][2]string{{"content-type", "application/json"}}
	if d.Status == 401 {
		headers = append(headers, [2]string{"www-authenticate", d.WWWAuthenticate(realm)})
	}
	proxywasm.SendLocalResponse(uint32(d.Status), "directpipe_"+d.Reason, append(body, '\n'), headers)
	metrics.inc("directpipe_handshake_denied_" + d.Reason)
	return proxywasm.ActionPause
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {
	delete(streamRoot, contextID)
	delete(rootConfig, contextID)
}

// metricSet defines counters lazily, once per VM.
type metricSet struct{ ids map[string]uint32 }

func newMetricSet() *metricSet { return &metricSet{ids: map[string]uint32{}} }

func (m *metricSet) inc(name string) {
	id, ok := m.ids[name]
	if !ok {
		var err error
		if id, err = proxywasm.DefineMetric(proxywasm.MetricCounter, name); err != nil {
			return
		}
		m.ids[name] = id
	}
	proxywasm.IncrementMetric(id, 1)
}
