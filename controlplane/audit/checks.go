package audit

import (
	"errors"
	"fmt"
	"strings"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	overloadv3 "github.com/envoyproxy/go-control-plane/envoy/config/overload/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dynamicmodulesv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/dynamic_modules/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	decompressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/decompressor/v3"
	dmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/dynamic_modules/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	wasmhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/wasm/v3"
	dmnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/dynamic_modules/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	wasmnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/wasm/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// shortTimeout is where an idle timeout starts to cut calls that merely
// pause (hold, mute, a user thinking).
const shortTimeout = time.Minute

type httpStreamAt struct {
	hcm                        *hcmv3.HttpConnectionManager
	hcmPath, wsPath, chainPath string
	ws                         *hcmv3.HttpConnectionManager_UpgradeConfig
	chain                      []*hcmv3.HttpFilter
	vh                         *routev3.VirtualHost
	route                      *routev3.Route
	routePath                  string
	inlineRoutes               bool
}

func (a *auditor) httpStream(s *Stream, at httpStreamAt) {
	action := at.route.GetRoute()
	rp := at.routePath + ".route"
	switch t := action.GetTimeout(); {
	case t == nil:
		a.add(Finding{Severity: Info, Check: "route-timeout", Path: rp + ".timeout",
			Found: "no route timeout: Envoy's default of 15s applies",
			Why:   routeTimeoutWhy,
			Fix:   "set timeout: 0s on stream routes and bound the handshake with the back end's own limits",
		}, s)
	case t.AsDuration() > 0:
		a.add(Finding{Severity: Info, Check: "route-timeout", Path: rp + ".timeout",
			Found: "route timeout " + dur(t),
			Why:   routeTimeoutWhy,
			Fix:   "set timeout: 0s on stream routes",
		}, s)
	}
	a.idle(s, action.GetIdleTimeout(), rp+".idle_timeout", at.hcm.GetStreamIdleTimeout(), at.hcmPath+".stream_idle_timeout")
	if d := action.GetMaxStreamDuration().GetMaxStreamDuration(); d.AsDuration() > 0 {
		a.maxDuration(s, d, rp+".max_stream_duration.max_stream_duration")
	} else if d := at.hcm.GetCommonHttpProtocolOptions().GetMaxStreamDuration(); d.AsDuration() > 0 {
		a.maxDuration(s, d, at.hcmPath+".common_http_protocol_options.max_stream_duration")
	}
	if d := at.hcm.GetCommonHttpProtocolOptions().GetMaxConnectionDuration(); d.AsDuration() > 0 {
		a.add(Finding{Severity: Info, Check: "max-connection-duration", Path: at.hcmPath + ".common_http_protocol_options.max_connection_duration",
			Found: "client connections are drained after " + dur(d),
			Why: "not shown on Envoy 1.40: at that age Envoy drains the connection but keeps it while a stream is active (envoy#34384); " +
				"a WebSocket over HTTP/1.1 and one over HTTP/2 (extended CONNECT) went on exchanging frames well past max_connection_duration plus drain_timeout. " +
				"A drained HTTP/2 connection takes no new stream, so clients open another connection",
			Fix: "nothing needed for live streams; remove it from listeners that carry streams if new streams should share connections",
		}, s)
	}
	switch {
	case action.GetRetryPolicy() != nil:
		a.retries(s, rp+".retry_policy")
	case at.vh.GetRetryPolicy() != nil:
		a.retries(s, strings.TrimSuffix(at.routePath, fmt.Sprintf(".routes[%s", lastIndex(at.routePath)))+".retry_policy")
	}
	if at.hcm.GetCodecType() != hcmv3.HttpConnectionManager_HTTP1 && !at.hcm.GetHttp2ProtocolOptions().GetAllowConnect() {
		a.add(Finding{Severity: Low, Check: "no-extended-connect", Path: at.hcmPath + ".http2_protocol_options.allow_connect",
			Found: fmt.Sprintf("the connection manager speaks HTTP/2 (codec %s) but does not allow extended CONNECT", at.hcm.GetCodecType()),
			Why:   "HTTP/2 clients open WebSockets with extended CONNECT (RFC 8441); without it they need a separate HTTP/1.1 connection per stream or fail",
			Fix:   "set http2_protocol_options: {allow_connect: true}",
		}, s)
	}
	if len(at.ws.GetFilters()) == 0 && len(at.hcm.GetHttpFilters()) > 1 {
		a.add(Finding{Severity: Info, Check: "upgrade-uses-rest-chain", Path: at.wsPath,
			Found: fmt.Sprintf("upgrades run the connection manager's whole HTTP filter chain (%d filters)", len(at.hcm.GetHttpFilters())),
			Why: "not shown on Envoy 1.40 on its own: through a REST chain of cors and the router an active WebSocket exchanged every frame unchanged; " +
				"the harm is that of a filter in the chain that reads or buffers bodies, which its own check reports. Every filter of the chain stays in the stream's path",
			Fix: "give the websocket upgrade_config its own filters: list with only the handshake check and the router",
		}, s)
	}
	for i, f := range at.chain {
		if f.GetDisabled() || disabledOn(f.GetName(), at.vh, at.route) {
			continue
		}
		a.httpFilter(s, f, fmt.Sprintf("%s[%d]", at.chainPath, i))
	}
	if at.inlineRoutes {
		a.add(Finding{Severity: Medium, Check: "routes-in-listener", Path: at.hcmPath + ".route_config",
			Found: "routes are inline in a listener delivered by LDS",
			Why:   "every route change is then a listener change, and a listener change drains every stream on it",
			Fix:   "deliver routes by RDS (rds: with a route_config_name) so that route changes leave the listener alone",
		}, s)
	}
	for _, c := range strings.Split(s.Cluster, ",") {
		if c != "" && !strings.HasPrefix(c, "(") {
			a.cluster(s, c, true)
		}
	}
	prefix := "http." + at.hcm.GetStatPrefix() + "."
	a.evidence(s, prefix+"downstream_rq_idle_timeout", "streams ended by the idle timeout")
	a.evidence(s, prefix+"downstream_rq_max_duration_reached", "streams ended by max_stream_duration")
	a.evidence(s, prefix+"downstream_cx_max_duration_reached", "connections ended by max_connection_duration")
}

// routeTimeoutWhy is what the route timeout does to an upgraded stream.
const routeTimeoutWhy = "not shown on Envoy 1.40: a WebSocket kept exchanging frames, and one stayed silent, for several times a 1s route timeout; " +
	"the timeout bounds the handshake only (older Envoys applied it to upgrades, envoy#20062). A stream that half-closes was not tried"

// lastIndex returns what follows the last "[" of a path, for trimming.
func lastIndex(p string) string { return p[strings.LastIndexByte(p, '[')+1:] }

func (a *auditor) retries(s *Stream, path string) {
	a.add(Finding{Severity: Medium, Check: "retries-on-upgrade", Path: path,
		Found: "a retry policy applies to a route that carries WebSockets",
		Why:   "retries are not supported on upgraded routes (Envoy's docs): a retry can replay the handshake to a second back end, and the router keeps request data for a replay that can never happen once the stream is up",
		Fix:   "remove the retry policy from stream routes (keep it on REST routes)",
	}, s)
}

// idle checks the timeout that ends a silent stream: the route's, else the
// connection manager's.
func (a *auditor) idle(s *Stream, route *durationpb.Duration, routePath string, hcm *durationpb.Duration, hcmPath string) {
	d, path, from := route, routePath, "route idle_timeout"
	if d == nil {
		d, path, from = hcm, hcmPath, "stream_idle_timeout"
	}
	switch {
	case d == nil:
		s.IdleTimeout = "5m (default)"
		a.add(Finding{Severity: Low, Check: "stream-idle-timeout", Path: hcmPath,
			Found: "no stream_idle_timeout here or on the route: Envoy's default of 5 minutes applies",
			Why:   "a stream with no frame in either direction for 5 minutes (a call on hold, a muted agent) is reset",
			Fix:   "set idle_timeout on the stream route to what a silent call may last, and send keepalive pings from the client",
		}, s)
	case d.AsDuration() == 0:
		s.IdleTimeout = "off (" + from + ")"
	case d.AsDuration() < shortTimeout:
		s.IdleTimeout = dur(d) + " (" + from + ")"
		a.add(Finding{Severity: Medium, Check: "stream-idle-timeout", Path: path,
			Found: "streams idle for " + dur(d) + " are reset",
			Why:   "a short pause in a call (hold, mute, a user thinking) ends the stream",
			Fix:   "raise idle_timeout on the stream route to what a silent call may last (minutes), and send keepalive pings from the client",
		}, s)
	default:
		s.IdleTimeout = dur(d) + " (" + from + ")"
	}
}

func (a *auditor) maxDuration(s *Stream, d *durationpb.Duration, path string) {
	a.add(Finding{Severity: Medium, Check: "max-stream-duration", Path: path,
		Found: "streams are reset after " + dur(d),
		Why:   "every call that lasts longer is cut, however active it is",
		Fix:   "remove max_stream_duration from stream routes, or set it above the longest call you accept",
	}, s)
}

// evidence reports a counter that shows streams were already ended.
func (a *auditor) evidence(s *Stream, stat, what string) string {
	if n := a.stats[stat]; n > 0 {
		return a.add(Finding{Severity: Medium, Check: "streams-cut", Path: "stats:" + stat,
			Found: fmt.Sprintf("%d %s since Envoy started", n, what),
			Why:   "the counter shows the setting above is cutting real streams",
			Fix:   "see the finding on the timeout it counts",
		}, s)
	}
	return ""
}

// disabledOn reports whether the route or its virtual host turns a filter
// off by name.
func disabledOn(name string, vh *routev3.VirtualHost, r *routev3.Route) bool {
	for _, m := range []map[string]*anypb.Any{r.GetTypedPerFilterConfig(), vh.GetTypedPerFilterConfig()} {
		if fc, ok := unpack(m[name], &routev3.FilterConfig{}); ok && fc.GetDisabled() {
			return true
		}
		if bc, ok := unpack(m[name], &bufferv3.BufferPerRoute{}); ok && bc.GetDisabled() {
			return true
		}
		if ea, ok := unpack(m[name], &extauthzv3.ExtAuthzPerRoute{}); ok && ea.GetDisabled() {
			return true
		}
	}
	return false
}

// harmlessHTTP are filters that act on headers only, once per stream.
var harmlessHTTP = map[string]bool{
	"envoy.extensions.filters.http.cors.v3.Cors":                              true,
	"envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit":         true,
	"envoy.extensions.filters.http.ratelimit.v3.RateLimit":                    true,
	"envoy.extensions.filters.http.rbac.v3.RBAC":                              true,
	"envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication":            true,
	"envoy.extensions.filters.http.header_to_metadata.v3.Config":              true,
	"envoy.extensions.filters.http.header_mutation.v3.HeaderMutation":         true,
	"envoy.extensions.filters.http.health_check.v3.HealthCheck":               true,
	"envoy.extensions.filters.http.set_metadata.v3.Config":                    true,
	"envoy.extensions.filters.http.cdn_loop.v3.CdnLoopConfig":                 true,
	"envoy.extensions.filters.http.csrf.v3.CsrfPolicy":                        true,
	"envoy.extensions.filters.http.basic_auth.v3.BasicAuth":                   true,
	"envoy.extensions.filters.http.api_key_auth.v3.ApiKeyAuth":                true,
	"envoy.extensions.filters.http.oauth2.v3.OAuth2":                          true,
	"envoy.extensions.filters.http.set_filter_state.v3.Config":                true,
	"envoy.extensions.filters.http.on_demand.v3.OnDemand":                     true,
	"envoy.extensions.filters.http.dynamic_forward_proxy.v3.FilterConfig":     true,
	"envoy.extensions.filters.http.stateful_session.v3.StatefulSession":       true,
	"envoy.extensions.filters.http.credential_injector.v3.CredentialInjector": true,
}

func (a *auditor) httpFilter(s *Stream, f *hcmv3.HttpFilter, path string) {
	cfg, cpath := a.filterConfig(f.GetName(), f.GetTypedConfig(), f.GetConfigDiscovery(), path)
	if cfg == nil {
		return
	}
	name := shortFilterName(f.GetName())
	if _, ok := unpack(cfg, &routerv3.Router{}); ok {
		return
	}
	if _, ok := unpack(cfg, &bufferv3.Buffer{}); ok {
		a.add(Finding{Severity: High, Check: "buffer-on-upgrade", Path: path,
			Found: fmt.Sprintf("the buffer filter (%s) is on the upgrade path", name),
			Why:   "it holds request data until the request ends or its limit is reached; a stream never ends, so frames wait, then the stream fails at the limit",
			Fix:   "take the buffer filter off the upgrade path (upgrade_configs filters:, or disable it on stream routes with typed_per_filter_config)",
		}, s)
		return
	}
	if ea, ok := unpack(cfg, &extauthzv3.ExtAuthz{}); ok {
		if ea.GetWithRequestBody() != nil {
			a.add(Finding{Severity: Info, Check: "ext-authz-body", Path: cpath + ".with_request_body",
				Found: fmt.Sprintf("ext_authz (%s) asks for the request body", name),
				Why: "not shown on Envoy 1.40: with a handshake followed at once by 16 KiB of frames, ext_authz asked without the body and the stream was upgraded; " +
					"it buffers the body of ordinary requests, not of upgrades",
				Fix: "drop with_request_body, or disable ext_authz's body buffering on stream routes (ExtAuthzPerRoute)",
			}, s)
		}
		return
	}
	if ep, ok := unpack(cfg, &extprocv3.ExternalProcessor{}); ok {
		pm := ep.GetProcessingMode()
		switch {
		case pm.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE:
			a.add(Finding{Severity: High, Check: "ext-proc-body", Path: cpath + ".processing_mode",
				Found: fmt.Sprintf("ext_proc (%s) sends bodies (request %s, response %s)", name, pm.GetRequestBodyMode(), pm.GetResponseBodyMode()),
				Why:   "every frame of the stream goes to the external processor and back before it moves on: a network round trip per frame, and buffered modes hold the stream",
				Fix:   "set request_body_mode and response_body_mode to NONE for stream routes (per-route overrides), or take ext_proc off the upgrade path",
			}, s)
		case ep.GetAllowModeOverride():
			a.add(Finding{Severity: Low, Check: "ext-proc-mode-override", Path: cpath + ".allow_mode_override",
				Found: fmt.Sprintf("ext_proc (%s) lets the processor switch on body modes", name),
				Why:   "the processor may ask for the stream's body at the handshake, and then every frame makes a round trip",
				Fix:   "turn allow_mode_override off for stream routes",
			}, s)
		}
		return
	}
	_, comp := unpack(cfg, &compressorv3.Compressor{})
	_, decomp := unpack(cfg, &decompressorv3.Decompressor{})
	if comp || decomp {
		a.add(Finding{Severity: Info, Check: "compression-on-upgrade", Path: path,
			Found: fmt.Sprintf("a (de)compressor (%s) is on the upgrade path", name),
			Why: "not shown on Envoy 1.40: through a gzip compressor, with the client accepting gzip, every frame of a WebSocket came back unchanged (a 101 response has no body to compress); " +
				"the filter is still called for every frame",
			Fix: "take compressors off the upgrade path; WebSockets negotiate permessage-deflate themselves",
		}, s)
		return
	}
	if l, ok := unpack(cfg, &luav3.Lua{}); ok {
		a.lua(s, l, cpath, name)
		return
	}
	if w, ok := unpack(cfg, &wasmhttpv3.Wasm{}); ok {
		a.wasmFilter(s, w.GetConfig().GetVmConfig().GetCode(), cpath+".config.vm_config.code", name, true)
		return
	}
	if d, ok := unpack(cfg, &dmhttpv3.DynamicModuleFilter{}); ok {
		a.dynamicModuleFilter(s, d.GetDynamicModuleConfig(), cpath+".dynamic_module_config", name, true)
		return
	}
	if !harmlessHTTP[typeName(cfg)] {
		a.add(Finding{Severity: Info, Check: "unknown-filter", Path: path,
			Found: fmt.Sprintf("filter %s (%s) is on the upgrade path", name, typeName(cfg)),
			Why:   "the audit does not know whether it reads or buffers bodies; if it does, it does so for every frame",
			Fix:   "check the filter's documentation, or keep only the check and the router on the upgrade path",
		}, s)
	}
}

func (a *auditor) lua(s *Stream, l *luav3.Lua, path, name string) {
	code := l.GetInlineCode() + "\n" + l.GetDefaultSourceCode().GetInlineString()
	for _, src := range l.GetSourceCodes() {
		code += "\n" + src.GetInlineString()
	}
	switch {
	case strings.Contains(code, ":body("):
		a.add(Finding{Severity: High, Check: "lua-reads-body", Path: path,
			Found: fmt.Sprintf("the Lua filter (%s) calls body()", name),
			Why:   "body() buffers until the end of the body; a stream's body never ends, so the stream stalls",
			Fix:   "do not read bodies in Lua on stream routes (check for an upgrade header first), or take the filter off the upgrade path",
		}, s)
	case strings.Contains(code, "bodyChunks"):
		a.add(Finding{Severity: Medium, Check: "lua-reads-body", Path: path,
			Found: fmt.Sprintf("the Lua filter (%s) iterates bodyChunks()", name),
			Why:   "it runs Lua for every frame of the stream",
			Fix:   "skip body handling for upgrades, or take the filter off the upgrade path",
		}, s)
	}
}

// bodyCallbacks are the Proxy-Wasm exports through which a module sees
// stream data.
var bodyCallbacks = map[bool][]string{
	true:  {"proxy_on_request_body", "proxy_on_response_body"},
	false: {"proxy_on_downstream_data", "proxy_on_upstream_data"},
}

func (a *auditor) wasmFilter(s *Stream, code *corev3.AsyncDataSource, path, name string, http bool) {
	exports, where, err := a.wasmExports(code)
	if err != nil {
		a.add(Finding{Severity: Info, Check: "wasm-not-read", Path: path,
			Found: fmt.Sprintf("the Wasm module of %s (%s) could not be read: %v", name, where, err),
			Why:   "the audit reads a module's export section to tell whether Envoy enters it for every frame",
			Fix:   "run the audit where the module's file is readable",
		}, s)
		return
	}
	var hit []string
	for _, cb := range bodyCallbacks[http] {
		if exports[cb] {
			hit = append(hit, cb)
		}
	}
	if len(hit) == 0 {
		return
	}
	if http {
		a.add(Finding{Severity: Info, Check: "wasm-reads-frames", Path: path,
			Found: fmt.Sprintf("the Wasm module of %s (%s) exports %s", name, where, strings.Join(hit, ", ")),
			Why: "not shown on Envoy 1.40: through a module that reads every body chunk, every frame of a WebSocket came back unchanged; " +
				"Envoy enters the VM for every frame, which costs proxy CPU per frame, and a module that pauses would hold frames (not tried). A handshake check needs only the header callbacks",
			Fix: "build the module without body callbacks, or take it off the upgrade path",
		}, s)
		return
	}
	a.add(Finding{Severity: Info, Check: "wasm-sees-every-chunk", Path: path,
		Found: fmt.Sprintf("the Wasm network filter %s (%s) exports %s", name, where, strings.Join(hit, ", ")),
		Why:   "a network filter sees nothing but data, so Envoy enters the VM for every chunk; a handshake check should return at once after its decision",
		Fix:   "nothing, if the module steps aside after the handshake; measure its per-frame cost",
	}, s)
}

// dataHooks are the dynamic-module ABI's hooks through which Envoy hands
// a module stream data: an HTTP filter's body hooks, a network filter's
// read and write hooks.
var dataHooks = map[bool][]string{
	true:  {"envoy_dynamic_module_on_http_filter_request_body", "envoy_dynamic_module_on_http_filter_response_body"},
	false: {"envoy_dynamic_module_on_network_filter_read", "envoy_dynamic_module_on_network_filter_write"},
}

// dynamicModuleFilter reports a dynamic module on a stream's path by the
// hooks its shared object exports. Envoy 1.40 requires an HTTP filter
// module's body hooks and calls them for every chunk of an upgraded
// stream, so unlike a Wasm module's, a dynamic module's body hooks cannot
// be left out: the finding says what it costs.
func (a *auditor) dynamicModuleFilter(s *Stream, cfg *dynamicmodulesv3.DynamicModuleConfig, path, name string, http bool) {
	exports, where, err := a.sharedObjectExports(cfg.GetModule())
	if cfg.GetModule() == nil {
		where, err = "lib"+cfg.GetName()+".so on Envoy's search path", errors.New("modules found by name are not read")
	}
	kind := "network filter"
	if http {
		kind = "HTTP filter"
	}
	if err != nil {
		a.add(Finding{Severity: Info, Check: "dynamic-module-not-read", Path: path,
			Found: fmt.Sprintf("the dynamic module of %s (%s) could not be read: %v", name, where, err),
			Why:   "the audit reads a shared object's dynamic symbols to tell which of Envoy's data hooks it exports; Envoy 1.40 requires an HTTP filter's body hooks and calls them for every chunk",
			Fix:   "run the audit where the module's file is readable",
		}, s)
		return
	}
	var hit []string
	for _, h := range dataHooks[http] {
		if exports[h] {
			hit = append(hit, h)
		}
	}
	if len(hit) == 0 {
		return
	}
	a.add(Finding{Severity: Info, Check: "dynamic-module-sees-every-chunk", Path: path,
		Found: fmt.Sprintf("the dynamic module %s %s (%s) exports %s", kind, name, where, strings.Join(hit, ", ")),
		Why:   "Envoy calls into the module, in Envoy's own process, for every chunk of the stream (an HTTP filter cannot leave its body hooks out: Envoy 1.40 refuses the module); each call is a native call into the module's runtime",
		Fix:   "nothing, if the hooks return at once; measure their per-frame cost against a route without the filter",
	}, s)
}

// harmlessNetwork are network filters that act once per connection.
var harmlessNetwork = map[string]bool{
	"envoy.extensions.filters.network.ext_authz.v3.ExtAuthz":               true,
	"envoy.extensions.filters.network.rbac.v3.RBAC":                        true,
	"envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit":   true,
	"envoy.extensions.filters.network.ratelimit.v3.RateLimit":              true,
	"envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit": true,
	"envoy.extensions.filters.network.sni_cluster.v3.SniCluster":           true,
	"envoy.extensions.filters.network.set_filter_state.v3.Config":          true,
}

func (a *auditor) networkFilter(s *Stream, f *listenerv3.Filter, path string) {
	cfg, cpath := a.filterConfig(f.GetName(), f.GetTypedConfig(), f.GetConfigDiscovery(), path)
	if cfg == nil {
		return
	}
	if w, ok := unpack(cfg, &wasmnetv3.Wasm{}); ok {
		a.wasmFilter(s, w.GetConfig().GetVmConfig().GetCode(), cpath+".config.vm_config.code", shortFilterName(f.GetName()), false)
		return
	}
	if d, ok := unpack(cfg, &dmnetv3.DynamicModuleNetworkFilter{}); ok {
		a.dynamicModuleFilter(s, d.GetDynamicModuleConfig(), cpath+".dynamic_module_config", shortFilterName(f.GetName()), false)
		return
	}
	if !harmlessNetwork[typeName(cfg)] {
		a.add(Finding{Severity: Info, Check: "unknown-filter", Path: path,
			Found: fmt.Sprintf("network filter %s (%s) is in front of tcp_proxy", shortFilterName(f.GetName()), typeName(cfg)),
			Why:   "the audit does not know whether it reads or holds the stream's data",
			Fix:   "check the filter's documentation",
		}, s)
	}
}

func (a *auditor) tcpChecks(s *Stream, tp *tcpproxyv3.TcpProxy, path string) {
	switch d := tp.GetIdleTimeout(); {
	case d == nil:
		s.IdleTimeout = "1h (default)"
		a.add(Finding{Severity: Low, Check: "tcp-idle-timeout", Path: path + ".idle_timeout",
			Found: "no idle_timeout: tcp_proxy's default of 1 hour applies",
			Why:   "a raw stream silent for an hour in both directions is closed",
			Fix:   "set idle_timeout to what a silent call may last, and send keepalive pings",
		}, s)
	case d.AsDuration() == 0:
		s.IdleTimeout = "off"
	case d.AsDuration() < shortTimeout:
		s.IdleTimeout = dur(d)
		a.add(Finding{Severity: Medium, Check: "tcp-idle-timeout", Path: path + ".idle_timeout",
			Found: "raw streams idle for " + dur(d) + " are closed",
			Why:   "a short pause in a call ends the stream",
			Fix:   "raise idle_timeout to what a silent call may last (minutes)",
		}, s)
	default:
		s.IdleTimeout = dur(d)
	}
	if d := tp.GetMaxDownstreamConnectionDuration(); d.AsDuration() > 0 {
		a.add(Finding{Severity: Medium, Check: "tcp-max-duration", Path: path + ".max_downstream_connection_duration",
			Found: "raw streams are closed after " + dur(d),
			Why:   "every call that lasts longer is cut, however active it is",
			Fix:   "remove max_downstream_connection_duration, or set it above the longest call",
		}, s)
	}
	prefix := "tcp." + tp.GetStatPrefix() + "."
	a.evidence(s, prefix+"idle_timeout", "connections closed by the idle timeout")
	a.evidence(s, prefix+"max_downstream_connection_duration", "connections closed by max_downstream_connection_duration")
}

// defaultLimit is Envoy's circuit-breaker default for connections and
// requests per cluster.
const defaultLimit = 1024

// cluster checks a back end of stream routes, once per cluster.
func (a *auditor) cluster(s *Stream, name string, http bool) {
	done := fmt.Sprintf("%s\x00%v", name, http)
	if keys, done := a.clusterDone[done]; done {
		for _, k := range keys {
			s.keys[k] = true
		}
		return
	}
	loc, ok := a.clusters[name]
	if !ok {
		a.note("cluster %s of %s is not in the dump", name, s.Path)
		return
	}
	c, path := loc.msg.(*clusterv3.Cluster), loc.path
	var keys []string
	var def *clusterv3.CircuitBreakers_Thresholds
	for _, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() == corev3.RoutingPriority_DEFAULT {
			def = t
		}
	}
	var unset []string
	if def.GetMaxConnections() == nil {
		unset = append(unset, "max_connections")
	}
	if http && def.GetMaxRequests() == nil {
		unset = append(unset, "max_requests")
	}
	if len(unset) > 0 {
		found := fmt.Sprintf("cluster %s keeps Envoy's default %s of %d", name, strings.Join(unset, " and "), defaultLimit)
		if n := a.stats["cluster."+name+".upstream_cx_overflow"] + a.stats["cluster."+name+".upstream_rq_pending_overflow"]; n > 0 {
			found += fmt.Sprintf("; %d overflows so far", n)
		}
		keys = append(keys, a.add(Finding{Severity: Medium, Check: "circuit-breaker-default", Path: path + ".circuit_breakers",
			Found: found,
			Why: "each stream holds one upstream connection (and, over HTTP/1.1, one request) for its whole life: shown on Envoy 1.40 with 1,024 WebSockets open, " +
				"the 1,025th handshake got no answer (upstream_cx_overflow) until another stream ended (with the route timeout off, as on stream routes, it waits that long); the 1,025th raw stream (tcp_proxy) was reset at once",
			Fix: "set circuit_breakers thresholds (max_connections, max_requests, max_pending_requests) to the number of concurrent calls the back end takes",
		}, s))
	}
	if c.GetOutlierDetection() != nil {
		keys = append(keys, a.add(Finding{Severity: Info, Check: "outlier-detection", Path: path + ".outlier_detection",
			Found: fmt.Sprintf("cluster %s ejects hosts by outlier detection", name),
			Why: "not shown on Envoy 1.40: a back end that reset each of its WebSockets right after the upgrade was not ejected (consecutive_5xx 5, 6 resets), the 101 counting as a success; " +
				"ejection only stops new streams to a host. A back end that refuses upgrades with 5xx was not tried: ejecting it is what the setting is for",
			Fix: "nothing needed for live streams; base ejection on active health checks if a back end refusing upgrades under load should keep taking new ones",
		}, s))
	}
	switch {
	case c.GetCloseConnectionsOnHostHealthFailure() && !http:
		keys = append(keys, a.add(Finding{Severity: High, Check: "health-failure-closes-streams", Path: path + ".close_connections_on_host_health_failure",
			Found: fmt.Sprintf("cluster %s closes every connection to a host that fails a health check", name),
			Why:   "one failed health check (a blip, a slow answer) cuts every live raw stream (tcp_proxy) on that host",
			Fix:   "turn close_connections_on_host_health_failure off: failing hosts then get no new calls and live ones finish",
		}, s))
	case c.GetCloseConnectionsOnHostHealthFailure():
		keys = append(keys, a.add(Finding{Severity: Info, Check: "health-failure-closes-streams", Path: path + ".close_connections_on_host_health_failure",
			Found: fmt.Sprintf("cluster %s closes connections to a host that fails a health check", name),
			Why:   "not shown for WebSockets on Envoy 1.40: after the host failed its health check a WebSocket to it stayed open; the setting closes tcp_proxy connections (raw streams), where it was shown",
			Fix:   "turn close_connections_on_host_health_failure off if this cluster also carries raw streams",
		}, s))
	}
	if k := a.bufferLimit(c.GetPerConnectionBufferLimitBytes(), path+".per_connection_buffer_limit_bytes", s); k != "" {
		keys = append(keys, k)
	}
	if http {
		if opts, ok := unpack(c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"], &upstreamhttpv3.HttpProtocolOptions{}); ok {
			if d := opts.GetCommonHttpProtocolOptions().GetMaxStreamDuration(); d.AsDuration() > 0 {
				keys = append(keys, a.add(Finding{Severity: Medium, Check: "max-stream-duration",
					Path:  path + ".typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].common_http_protocol_options.max_stream_duration",
					Found: "upstream streams of cluster " + name + " are reset after " + dur(d),
					Why:   "every call that lasts longer is cut, however active it is",
					Fix:   "remove max_stream_duration from the back end's protocol options",
				}, s))
			}
			if k := a.evidence(s, "cluster."+name+".upstream_rq_max_duration_reached", "streams ended by the back end's max_stream_duration"); k != "" {
				keys = append(keys, k)
			}
		}
	}
	a.clusterDone[done] = keys
}

// bufferLimit flags per-connection buffer limits far from Envoy's 1 MiB
// default, in either direction.
func (a *auditor) bufferLimit(limit *wrapperspb.UInt32Value, path string, s ...*Stream) string {
	v := limit.GetValue()
	switch {
	case limit == nil:
		return ""
	case v > 1<<20:
		return a.add(Finding{Severity: Low, Check: "buffer-limit", Path: path,
			Found: fmt.Sprintf("per-connection buffer limit of %d bytes", v),
			Why: "a slow reader lets Envoy queue this much of a stream before back-pressure reaches the sender: shown on Envoy 1.40, where with a 64 MiB limit a sender got more than 64 MiB out to a back end that read nothing " +
				"(9 to 13 MiB with the default, the kernel's buffers included); queued audio is stale audio (16 kHz 16-bit audio is 32 KB a second)",
			Fix: "keep the default (1 MiB) or lower for real-time streams",
		}, s...)
	case v < 16<<10:
		return a.add(Finding{Severity: Low, Check: "buffer-limit", Path: path,
			Found: fmt.Sprintf("per-connection buffer limit of %d bytes", v),
			Why: "a limit below a few frames makes Envoy stop reading the stream at every burst: shown on Envoy 1.40, where with 1 KiB limits every 16 KiB frame paused Envoy's reads of both sides, never with the default; " +
				"each pause waits for the buffer to drain, which adds latency",
			Fix: "raise it to at least 32 KiB",
		}, s...)
	}
	return ""
}

func (a *auditor) listenerChecks(at listenerAt, streams []*Stream) {
	a.bufferLimit(at.l.GetPerConnectionBufferLimitBytes(), at.path+".per_connection_buffer_limit_bytes", streams...)
	if !at.lds {
		return
	}
	drain := "unknown (no /server_info)"
	if opts := a.si.GetCommandLineOptions(); opts != nil {
		drain = fmt.Sprintf("%s, strategy %s (--drain-time-s, --drain-strategy)", dur(opts.GetDrainTime()), opts.GetDrainStrategy())
	}
	a.add(Finding{Severity: Info, Check: "lds-listener", Path: at.path,
		Found: fmt.Sprintf("listener %s comes by LDS; drain time %s", at.l.GetName(), drain),
		Why:   "any update of this listener drains its connections; upgraded HTTP/1.1 connections and raw streams cannot be drained gracefully and are cut when the drain time ends",
		Fix:   "keep changes that travel often (routes, back ends, filter config, keys) out of the listener: RDS, CDS/EDS, ECDS",
	}, streams...)
	if md := at.l.GetMetadata(); len(md.GetFilterMetadata()) > 0 || len(md.GetTypedFilterMetadata()) > 0 {
		a.add(Finding{Severity: Low, Check: "listener-metadata", Path: at.path + ".metadata",
			Found: fmt.Sprintf("listener %s carries metadata", at.l.GetName()),
			Why:   "metadata is part of the listener: a control plane that writes changing values there (versions, timestamps, owners) drains the listener on every push",
			Fix:   "keep metadata on listeners constant, or move it to routes",
		}, streams...)
	}
	if n := a.stats["listener_manager.listener_modified"]; n > 0 {
		a.add(Finding{Severity: Medium, Check: "listeners-modified", Path: "stats:listener_manager.listener_modified",
			Found: fmt.Sprintf("Envoy has applied %d listener updates since it started", n),
			Why:   "each update drained every connection on the listener it changed",
			Fix:   "find what changes the listeners (dpctl policy diff shows it for directpipe) and move it to RDS, CDS/EDS or ECDS",
		}, streams...)
	}
}

func (a *auditor) server() {
	if a.si.GetState() == adminv3.ServerInfo_DRAINING {
		a.add(Finding{Severity: Info, Check: "server-draining", Path: "server_info.state",
			Found: "Envoy reports DRAINING: its health check has been failed (/healthcheck/fail), usually before a restart or shutdown",
			Why: "not shown on Envoy 1.40: after /healthcheck/fail a WebSocket through it went on exchanging frames for four times the drain time; " +
				"its streams end when the process stops, which is what this state usually precedes",
			Fix: "expected before a restart; otherwise find who called /healthcheck/fail (/healthcheck/ok undoes it)",
		})
	}
}

// overload checks the overload manager's actions that end or shorten
// streams.
func (a *auditor) overload() {
	om := a.d.bootstrap.GetBootstrap().GetOverloadManager()
	for i, act := range om.GetActions() {
		path := fmt.Sprintf("bootstrap.overload_manager.actions[%d]", i)
		switch act.GetName() {
		case "envoy.overload_actions.reset_high_memory_stream":
			a.add(Finding{Severity: Medium, Check: "overload-resets-streams", Path: path,
				Found: "the overload manager resets the streams that hold the most buffered memory",
				Why:   "under memory pressure long-lived streams, which buffer the longest, are the first to be reset",
				Fix:   "bound buffers instead (per_connection_buffer_limit_bytes), or trigger the action only near the hard limit",
			}, a.r.Streams...)
		case "envoy.overload_actions.reduce_timeouts":
			cfg, _ := unpack(act.GetTypedConfig(), &overloadv3.ScaleTimersOverloadActionConfig{})
			for _, t := range cfg.GetTimerScaleFactors() {
				if t.GetTimer() == overloadv3.ScaleTimersOverloadActionConfig_HTTP_DOWNSTREAM_STREAM_IDLE {
					a.add(Finding{Severity: Medium, Check: "overload-shortens-idle", Path: path,
						Found: "under load the overload manager shortens the stream idle timeout",
						Why:   "silent streams are reset sooner when Envoy is busy, which is when calls pile up",
						Fix:   "leave HTTP_DOWNSTREAM_STREAM_IDLE out of reduce_timeouts, or scale it only a little",
					}, a.r.Streams...)
				}
			}
		}
	}
}

// dur prints a duration the way a person writes it: 5m, 1h30m, 300ms.
func dur(d *durationpb.Duration) string {
	s := d.AsDuration().String()
	for _, z := range []string{"m0s", "h0m"} {
		s = strings.Replace(s, z, z[:1], 1)
	}
	return s
}
