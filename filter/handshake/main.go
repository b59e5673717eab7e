//go:build wasip1

// Command filter is the directpipe handshake filter, a Proxy-Wasm (ABI
// 0.2.1) module built by the standard Go toolchain as a WASI reactor:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o bin/handshake.wasm ./filter/handshake
//
// It checks the caller once, on the request headers of the handshake, and
// exports no body, data or trailer callback: after the headers, Envoy never
// enters the VM for this stream again, whatever the stream carries.
package main

import (
	"strconv"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/proxywasm"
)

// main is not called: with -buildmode=c-shared the host runs _initialize,
// which initialises the runtime and the packages, then calls the exports.
func main() {}

// Package-level state is the Wasm ABI glue: the host drives the module by
// context ids, and the only place to keep per-context state is here. Each
// VM is single-threaded, so no locking is needed.
var (
	// rootConfig maps a root (plugin) context to its parsed configuration.
	rootConfig = map[uint32]*auth.Config{}
	// streamRoot maps an HTTP context to its root context.
	streamRoot = map[uint32]uint32{}
)

//go:wasmexport proxy_on_configure
func proxyOnConfigure(rootID, pluginConfigSize uint32) uint32 {
	proxywasm.ReleasePending()
	data, err := proxywasm.PluginConfiguration()
	if err != nil {
		proxywasm.Log(proxywasm.LogError, err.Error())
		return 0
	}
	cfg, err := auth.ParseConfig(data)
	if err != nil {
		// Returning false makes Envoy reject this configuration; a
		// previous one keeps serving.
		proxywasm.Log(proxywasm.LogError, err.Error())
		return 0
	}
	rootConfig[rootID] = cfg
	// Every counter exists from the start, so dashboards see zeros
	// rather than gaps.
	proxywasm.CounterID("directpipe_handshake_allowed")
	for _, r := range auth.Reasons() {
		proxywasm.CounterID("directpipe_handshake_denied_" + r)
	}
	proxywasm.Log(proxywasm.LogInfo, "configured: "+cfg.Summary())
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
	proxywasm.ReleasePending()
	cfg := rootConfig[streamRoot[contextID]]
	if cfg == nil {
		return reject(auth.NotConfigured(), auth.DefaultRealm)
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
		realm := auth.DefaultRealm
		if policy != nil {
			realm = policy.Realm
			logDebug("policy " + policy.Name + " denied a handshake on route " + strconv.Quote(route) + ": " + d.Reason)
		}
		return reject(d, realm)
	}
	if err := apply(d); err != nil {
		// The token may still be on the request: it must not go upstream.
		proxywasm.Log(proxywasm.LogError, err.Error())
		return reject(auth.Internal(), auth.DefaultRealm)
	}
	if policy != nil {
		proxywasm.Count("directpipe_handshake_allowed")
	}
	return uint32(proxywasm.ActionContinue)
}

// apply strips the token and any client copy of the identity headers, then
// sets the verified ones.
func apply(d auth.Decision) error {
	for _, h := range d.Remove {
		if err := proxywasm.RemoveHeader(proxywasm.MapRequestHeaders, h); err != nil {
			return err
		}
	}
	if d.Path != "" {
		if err := proxywasm.ReplaceHeader(proxywasm.MapRequestHeaders, ":path", d.Path); err != nil {
			return err
		}
	}
	for _, kv := range d.Set {
		if err := proxywasm.ReplaceHeader(proxywasm.MapRequestHeaders, kv[0], kv[1]); err != nil {
			return err
		}
	}
	return nil
}

// routeName reads the name of the route Envoy matched; the control plane
// keys auth policies by it. Envoy answers NotFound when no route matched
// and "" for a route without a name, which must not pass as the former.
func routeName() string {
	v, err := proxywasm.GetProperty("xds", "route_name")
	switch {
	case err != nil:
		return ""
	case len(v) == 0:
		return auth.UnnamedRoute
	}
	return string(v)
}

// reject answers locally; the reason is in the body and the details, the
// token is in neither.
func reject(d auth.Decision, realm string) uint32 {
	headers := [][2]string{{"content-type", "application/json"}}
	if d.Challenges() {
		headers = append(headers, [2]string{"www-authenticate", d.WWWAuthenticate(realm)})
	}
	if err := proxywasm.SendLocalResponse(uint32(d.Status), "directpipe_"+d.Reason, d.Body(), headers, -1); err != nil {
		proxywasm.Log(proxywasm.LogError, err.Error())
	}
	proxywasm.Count("directpipe_handshake_denied_" + d.Reason)
	return uint32(proxywasm.ActionPause)
}

//go:wasmexport proxy_on_done
func proxyOnDone(contextID uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func proxyOnDelete(contextID uint32) {
	delete(streamRoot, contextID)
	delete(rootConfig, contextID)
}

func logDebug(msg string) { proxywasm.Log(proxywasm.LogDebug, msg) }
