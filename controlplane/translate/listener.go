package translate

import (
	"fmt"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// HandshakeFilterName names the handshake filter in both chains and its ECDS
// resource: Envoy fetches the filter's config by this name.
const HandshakeFilterName = "directpipe.handshake"

// adsSource is the config source for every dynamic resource: the one ADS
// stream, so Envoy receives a consistent set from one control plane.
//
// Envoy waits for a resource from it however long it takes (an initial
// fetch timeout of zero): with its default of 15 s, a listener whose
// routes or filter config are late would start serving without them, and
// a cluster without its endpoints, each answering 5xx, while Envoy
// reports itself ready.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		InitialFetchTimeout:   durationpb.New(0),
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// listener builds an HTTP listener. Its content depends only on the listener
// policy, never on routes, back ends or keys: those travel by RDS, CDS/EDS and
// ECDS, because any change to a listener drains its live connections.
func listener(l *policyv1.Listener, kind FilterKind) (*listenerv3.Listener, error) {
	addr, err := socketAddress(l.GetAddress())
	if err != nil {
		return nil, fmt.Errorf("translate: listener %q: %w", l.GetName(), err)
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: l.GetName(),
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: l.GetName(),
			ConfigSource:    adsSource(),
		}},
		// The REST chain: the handshake check (for REST routes with auth),
		// CORS and the local rate limit (both configured per route, and
		// idle on routes that do not ask for them), then the router.
		HttpFilters: []*hcmv3.HttpFilter{handshakeFilter(kind), corsFilter(), rateLimitFilter(), headerMutationFilter(), routerFilter()},
		// The direct path: a WebSocket upgrade runs only the handshake check
		// and the router. Routes opt in or out per route.
		UpgradeConfigs: []*hcmv3.HttpConnectionManager_UpgradeConfig{{
			UpgradeType: "websocket",
			Filters:     []*hcmv3.HttpFilter{handshakeFilter(kind), routerFilter()},
		}},
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT,
	}
	edgeDefaults(hcm, l)
	if l.GetHttp2() {
		hcm.Http2ProtocolOptions = http2Options(l.GetLimits())
	} else {
		hcm.CodecType = hcmv3.HttpConnectionManager_HTTP1
	}
	chain := &listenerv3.FilterChain{
		Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}},
	}
	if t := l.GetTls(); t != nil {
		alpn := []string{"http/1.1"}
		if l.GetHttp2() {
			alpn = []string{"h2", "http/1.1"}
		}
		// A client that sends its hello and then stalls must not hold a
		// connection for longer than a slow head may.
		chain.TransportSocketConnectTimeout = durationOr(l.GetLimits().GetRequestHeadersTimeout(), DefaultRequestHeadersTimeout)
		chain.TransportSocket = &corev3.TransportSocket{
			Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.DownstreamTlsContext{
				CommonTlsContext: &tlsv3.CommonTlsContext{
					TlsCertificates: []*tlsv3.TlsCertificate{{
						CertificateChain: fileSource(t.GetCertFile()),
						PrivateKey:       fileSource(t.GetKeyFile()),
					}},
					AlpnProtocols: alpn,
				},
			})},
		}
	}
	return &listenerv3.Listener{
		Name:         l.GetName(),
		Address:      addr,
		FilterChains: []*listenerv3.FilterChain{chain},
		// The request headers timeout starts at a head's first byte, and
		// the HCM's idle timeout only once it has a connection: a socket
		// that never sends a byte would be held for ever. An inspector
		// waits for the first bytes (a TLS hello, or an HTTP request
		// line) and Envoy closes the socket if they have not come within
		// the timeout.
		ListenerFilters:        []*listenerv3.ListenerFilter{firstBytesFilter(l.GetTls() != nil)},
		ListenerFiltersTimeout: durationOr(l.GetLimits().GetRequestHeadersTimeout(), DefaultRequestHeadersTimeout),
	}, nil
}

// firstBytesFilter is the listener filter that reads a connection's first
// bytes: the TLS inspector on a TLS listener, the HTTP one otherwise.
func firstBytesFilter(tls bool) *listenerv3.ListenerFilter {
	if tls {
		return &listenerv3.ListenerFilter{
			Name:       "envoy.filters.listener.tls_inspector",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})},
		}
	}
	return &listenerv3.ListenerFilter{
		Name:       "envoy.filters.listener.http_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspectorv3.HttpInspector{})},
	}
}

// Edge defaults of every HTTP listener; policy may override each one.
const (
	DefaultRequestHeadersTimeout            = 10 * time.Second
	DefaultConnectionIdleTimeout            = time.Minute
	DefaultProxiedConnectionIdleTimeout     = 5 * time.Minute
	DefaultHTTP2MaxConcurrentStreams        = 100
	DefaultHTTP2InitialStreamWindowSize     = 64 << 10
	DefaultHTTP2InitialConnectionWindowSize = 1 << 20
	DefaultHTTP2KeepaliveInterval           = 30 * time.Second
	DefaultHTTP2KeepaliveTimeout            = 10 * time.Second
)

// noInternalAddress returns the internal address list of every HTTP
// listener.
// An empty list is not "none": Envoy then falls back to its default
// (loopback and RFC 1918 count as internal), so a local client without
// X-Forwarded-For would be told X-Envoy-Internal and its x-envoy-*
// headers obeyed. The limited broadcast address can never be a TCP peer,
// so this list matches no client, IPv4 or IPv6.
func noInternalAddress() []*corev3.CidrRange {
	return []*corev3.CidrRange{{AddressPrefix: "255.255.255.255", PrefixLen: wrapperspb.UInt32(32)}}
}

// edgeDefaults makes the listener safe to face clients directly.
//
//   - The client's address is the connection's, and X-Forwarded-For is
//     believed only for the hops the policy trusts. No address is
//     internal, loopback included, so x-envoy-* control headers a client
//     sends (retries, timeouts) are removed, not obeyed.
//   - A header name with an underscore refuses the request (400): many
//     back ends read x_directpipe_identity as x-directpipe-identity (CGI
//     and WSGI turn both into HTTP_X_DIRECTPIPE_IDENTITY), so it could
//     smuggle a spoofed identity past the filter, which strips only the
//     dashed name. Dropping it silently would hide a client's mistake.
//   - A client must send its whole request head within a bound: a
//     slowloris head holds a connection, never the back end. A
//     connection with no request in flight is closed after the
//     connection idle timeout, so idle keep-alive connections, and
//     HTTP/2 connections that sent their preface and nothing more (no
//     head, so no head timeout), do not pile up either; a WebSocket is
//     a request in flight for its whole life. HTTP/2 PINGs do not keep
//     a connection alive (the timer counts requests only), and an
//     HTTP/2 connection is told GOAWAY and closed after the HCM's drain
//     timeout (5 s).
func edgeDefaults(hcm *hcmv3.HttpConnectionManager, l *policyv1.Listener) {
	lim := l.GetLimits()
	hcm.UseRemoteAddress = wrapperspb.Bool(true)
	hcm.XffNumTrustedHops = lim.GetTrustedProxyHops()
	hcm.InternalAddressConfig = &hcmv3.HttpConnectionManager_InternalAddressConfig{UnixSockets: false, CidrRanges: noInternalAddress()}
	hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{
		HeadersWithUnderscoresAction: corev3.HttpProtocolOptions_REJECT_REQUEST,
		IdleTimeout:                  durationOr(lim.GetConnectionIdleTimeout(), connectionIdleTimeout(lim)),
	}
	hcm.RequestHeadersTimeout = durationOr(lim.GetRequestHeadersTimeout(), DefaultRequestHeadersTimeout)
}

// connectionIdleTimeout is a listener's default idle timeout. Facing
// clients, a minute: a browser or agent that comes back later pays one
// new connection, and a client that opens connections to hold them holds
// each for a minute, not five. Behind trusted proxies, five minutes: a
// load balancer pools its connections to Envoy and must close an idle
// one before Envoy does, or a request it sends as Envoy closes fails
// (AWS's ALB keeps idle connections for 60 s by default).
func connectionIdleTimeout(lim *policyv1.ListenerLimits) time.Duration {
	if lim.GetTrustedProxyHops() > 0 {
		return DefaultProxiedConnectionIdleTimeout
	}
	return DefaultConnectionIdleTimeout
}

// http2Options bounds what one HTTP/2 connection may ask of Envoy: streams
// at once and the data it may buffer per stream and per connection.
//
// It also PINGs every client connection. A client that vanishes without
// a FIN or RST leaves its WebSockets looking alive: a silent stream is
// ended only by its route's idle timeout (minutes, since a call may be
// quiet), and the connection idle timeout never fires while a stream is
// open. Envoy closes a connection whose PING gets no answer (no frame at
// all) within the timeout, and a live client answers in its HTTP/2
// stack, whatever its WebSockets are doing.
func http2Options(lim *policyv1.ListenerLimits) *corev3.Http2ProtocolOptions {
	return &corev3.Http2ProtocolOptions{
		AllowConnect:                true,
		MaxConcurrentStreams:        wrapperspb.UInt32(uint32Or(lim.GetHttp2MaxConcurrentStreams(), DefaultHTTP2MaxConcurrentStreams)),
		InitialStreamWindowSize:     wrapperspb.UInt32(uint32Or(lim.GetHttp2InitialStreamWindowSize(), DefaultHTTP2InitialStreamWindowSize)),
		InitialConnectionWindowSize: wrapperspb.UInt32(uint32Or(lim.GetHttp2InitialConnectionWindowSize(), DefaultHTTP2InitialConnectionWindowSize)),
		ConnectionKeepalive: &corev3.KeepaliveSettings{
			Interval: durationOr(lim.GetHttp2KeepaliveInterval(), DefaultHTTP2KeepaliveInterval),
			Timeout:  durationOr(lim.GetHttp2KeepaliveTimeout(), DefaultHTTP2KeepaliveTimeout),
		},
	}
}

func fileSource(path string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
}

// handshakeFilter refers to the handshake filter by ECDS, so a key rotation
// or a new route's auth setting reaches Envoy without touching the
// listener. It takes only the config type of the build the node runs:
// Envoy refuses any other.
func handshakeFilter(kind FilterKind) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name: HandshakeFilterName,
		ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{ConfigDiscovery: &corev3.ExtensionConfigSource{
			ConfigSource: adsSource(),
			TypeUrls:     []string{kind.typeURL()},
		}},
	}
}

func corsFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       "envoy.filters.http.cors",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&corsv3.Cors{})},
	}
}

// RateLimitFilterName is the local rate limit filter; routes enable it.
const RateLimitFilterName = "envoy.filters.http.local_ratelimit"

// rateLimitFilter has no token bucket of its own: it limits nothing until a
// route's per-filter config gives it one.
func rateLimitFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       RateLimitFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&ratelimitv3.LocalRateLimit{StatPrefix: "http_local_rate_limiter"})},
	}
}

// HeaderMutationFilterName edits a request before the router; only the
// routes that answer 426 configure it (upgradeRequiredRoute).
const HeaderMutationFilterName = "envoy.filters.http.header_mutation"

// headerMutationFilter does nothing until a route's per-filter config
// gives it work. It sits on the REST chain only: the upgrade chain stays
// the handshake filter and the router.
func headerMutationFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       HeaderMutationFilterName,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&headermutationv3.HeaderMutation{})},
	}
}

func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	}
}

// mustAny packs a message. Marshalling a well-formed generated message cannot
// fail, so a failure is a programming error.
// Deterministic marshalling keeps map order, and so content hashes, stable.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(err)
	}
	return a
}
