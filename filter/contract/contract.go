// Package contract is the one definition of what the control plane and the
// handshake modules must agree on: the JSON configuration the control plane
// sends by ECDS, the reason codes of a denial and the answer each gets, the
// names of the deny path, the limits and the metric names. The control
// plane builds values of these types; the filter parses them. It imports
// the standard library only, so both sides, and the Wasm build, can use it.
package contract

// Defaults the filter applies to a field the document leaves empty.
const (
	DefaultRealm         = "directpipe"
	DefaultMaxTokenBytes = 8192
	// DefaultMaxTokenLifetimeSeconds bounds how far ahead a token's exp
	// may be: a signed token that never expires (exp: 1e20) is a leaked
	// credential nobody can retire but by rotating the key.
	DefaultMaxTokenLifetimeSeconds = 24 * 60 * 60
	// MaxTokenLifetimeSeconds is the largest bound a policy may set.
	MaxTokenLifetimeSeconds = 366 * 24 * 60 * 60
)

// MaxHeadBytes bounds the head of an upgrade request the tcp module reads,
// blank line included. Browsers send well under 4 KiB; the rest is room for
// tokens in a header or the query. The control plane sizes tcp_proxy's
// early-data buffer from it.
const MaxHeadBytes = 32 << 10

// TCPRootIDPrefix starts the root id of every tcp mode plugin (the route
// name follows); any other root id is an HTTP plugin. One module serves
// both filters, and the root id is what tells it which one a plugin is.
const TCPRootIDPrefix = "directpipe.handshake_tcp."

// The tcp module's deny path. A network filter cannot write to its client,
// so the module sends a denied connection through DenyCluster to
// DenyListener, an Envoy internal listener the control plane builds, with a
// request whose path is DenyPathPrefix and the reason.
const (
	DenyCluster    = "directpipe-deny"
	DenyListener   = "directpipe-deny"
	DenyPathPrefix = "/"
	// ChallengeHeader carries the WWW-Authenticate value to the deny
	// listener, which copies it into its answer.
	ChallengeHeader = "x-directpipe-challenge"
)

// Counters the modules define; a denial's counter is its prefix and the
// reason code.
const (
	MetricAllowed         = "directpipe_handshake_allowed"
	MetricDeniedPrefix    = "directpipe_handshake_denied_"
	MetricTCPAllowed      = "directpipe_tcp_handshake_allowed"
	MetricTCPDeniedPrefix = "directpipe_tcp_handshake_denied_"
	MetricTCPHeadTimeout  = "directpipe_tcp_handshake_timeout"
	// MetricQuotaDeniedPrefix counts quota refusals by reason and
	// identity: the prefix, the reason, ".", then the identity made safe
	// for a stat name, or QuotaOtherIdentity past MaxIdentityMetrics.
	MetricQuotaDeniedPrefix = "directpipe_quota_denied_"
	// MetricQuotaLivePrefix is a gauge of one identity's live streams
	// under a quota on this Envoy: the prefix, the policy, ".", then
	// the identity as EscapeStatName writes it. The control plane reads
	// them from the Envoy's stats to split quotas by use.
	MetricQuotaLivePrefix = "directpipe_quota_live."
	// MetricQuotaLiveUnlabelled is a gauge of the live streams under a
	// quota whose identity has no gauge of its own.
	MetricQuotaLiveUnlabelled = "directpipe_quota_live_unlabelled"
	// The native module cannot name stats after its config is created,
	// so it defines the per-identity ones with labels: the live gauge as
	// MetricQuotaLive with LabelPolicy and LabelIdentity, a refusal
	// counter as the prefix and reason with LabelIdentity. Envoy renders
	// them as <name>.<label>.<value>..., under NativeStatPrefix where the
	// Wasm module's are under WasmStatPrefix.
	MetricQuotaLive  = "directpipe_quota_live"
	LabelPolicy      = "policy"
	LabelIdentity    = "identity"
	NativeStatPrefix = "dynamicmodulescustom."
	WasmStatPrefix   = "wasmcustom."
	// MetricTCPShed counts undecided handshakes closed to make room for
	// new ones when a worker holds as many as it may.
	MetricTCPShed          = "directpipe_tcp_handshake_shed"
	LocalReplyDetailPrefix = "directpipe_"
	// The callbacks the module served, by the kind of plugin they were
	// for: an HTTP stream enters it a fixed number of times whatever it
	// carries, a tcp connection once per chunk it sends.
	MetricHTTPCallbacks = "directpipe_vm_callbacks_http"
	MetricTCPCallbacks  = "directpipe_vm_callbacks_tcp"
	// The token cache of both filters: a hit skipped the signature check,
	// a miss verified the token (and cached it when it was allowed).
	MetricTokenCacheHits   = "directpipe_token_cache_hits"
	MetricTokenCacheMisses = "directpipe_token_cache_misses"
	// RS* and ES* signatures checked by Envoy's crypto, and those the
	// module checked itself because the host could not.
	MetricHostVerified          = "directpipe_signature_host_checks"
	MetricHostVerifyUnavailable = "directpipe_signature_host_unavailable"
)

// RouteMarkerHeader carries the name of the route whose policy the HTTP
// module checked, once the module has edited the request. Envoy matches a
// request again after a filter edits its headers; every route the control
// plane makes matches only when this header is absent or names it, so the
// re-match can only land on the route that was checked (or on the
// route-changed answer). Routes remove it before forwarding.
const RouteMarkerHeader = "x-directpipe-route"

// RouteMetadataNamespace and RouteMetadataPolicy place a route's auth
// setting in the route itself: the control plane tags every HTTP route
// with auth with filter_metadata {directpipe: {policy: <name>}}, and the
// HTTP module reads it (the property
// xds.route_metadata.filter_metadata.directpipe.policy). A route and its
// auth setting then reach Envoy in one RDS update, and the filter
// configuration (ECDS) carries only the policies, without a route map:
// adding or changing routes never updates it, and a route without the
// tag is public.
const (
	RouteMetadataNamespace = "directpipe"
	RouteMetadataPolicy    = "policy"
)

// RouteChangedRoute names the last route of every virtual host: a request
// carrying a marker that no route accepts (its route no longer matches
// after the module's edits) is answered 500 route_changed there. The name
// cannot be a policy route's ('~' is not allowed in one).
const RouteChangedRoute = "~route-changed"

// IsReservedHeader reports whether the filter may never be told to write
// the lower-case header name: it steers framing or routing, carries the
// credential itself, or is hop-by-hop. Policy validation and the filter's
// parser both refuse such identity and claim headers.
func IsReservedHeader(name string) bool {
	switch name {
	case "authorization", "host", "connection", "upgrade",
		"content-length", "transfer-encoding", "cookie",
		"sec-websocket-key", "sec-websocket-protocol", "sec-websocket-version",
		"keep-alive", "proxy-connection", "te", RouteMarkerHeader:
		return true
	}
	return false
}
