package policy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// Route kinds and WebSocket modes as they are spelled in policy.
const (
	KindWebSocket = "websocket"
	KindHTTP      = "http"
	ModeUpgrade   = "upgrade"
	ModeTCP       = "tcp"
)

// Load-balancing policies as they are spelled in policy.
const (
	LBRoundRobin   = "round_robin"
	LBLeastRequest = "least_request"
	LBLeastStreams = "least_streams"
	LBRingHash     = "ring_hash"
)

// Bounds of a least_streams back end's settings.
const (
	MaxEndpointStreams = 1_000_000 // an endpoint's max_streams
	MaxSlowStart       = time.Hour
)

// RateLimitUnits are the units a rate limit may be counted in.
var RateLimitUnits = map[string]time.Duration{"second": time.Second, "minute": time.Minute, "hour": time.Hour}

var (
	namePattern          = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$`)
	headerPattern        = regexp.MustCompile(`^[a-z0-9!#$%&'*+.^_|~-]+$`)
	sha256Pattern        = regexp.MustCompile(`^[0-9a-f]{64}$`)
	hostPattern          = regexp.MustCompile(`^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$`)
	allowedOriginPattern = regexp.MustCompile(`^https?://(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$`)
	rewritePattern       = regexp.MustCompile(`^/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*$`)
	subprotocolPattern   = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+.^_|~-]+$`)
	dnsNamePattern       = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)
	originPattern        = regexp.MustCompile(`^(https?://[a-z0-9.-]+(:[0-9]{1,5})?|\*\.[a-z0-9.-]+)$`)
)

// Warnings lists what a valid policy allows but probably should not, one
// line each with its field path; the control plane logs them at every
// apply and returns them to dpctl.
func Warnings(p *policyv1.Policy) []string {
	var out []string
	for i, a := range p.GetAuthPolicies() {
		j := a.GetJwt()
		if (j.GetJwksFile() != "" || j.GetJwksUrl() != "") && j.GetIssuer() == "" {
			out = append(out, fmt.Sprintf("auth_policies[%d].jwt.issuer: not set: tokens from any issuer whose keys are in the set are accepted", i))
		}
	}
	return out
}

// Validate checks a decoded policy: names, references and values. All
// problems are reported together, each prefixed with its field path.
func Validate(p *policyv1.Policy) error {
	v := &validator{}
	v.policy(p)
	return errors.Join(v.errs...)
}

// CheckSize checks what bounds a policy's size only, the bounds on its
// lists, which Validate checks first too: a caller holding a policy
// that came as a message can refuse it before it spends anything more
// on it (parsing the text that came with it, translating it).
func CheckSize(p *policyv1.Policy) error {
	v := &validator{}
	v.counts(p)
	return errors.Join(v.errs...)
}

type validator struct{ errs []error }

// maxQuoted bounds each value a validation message quotes: a value of
// megabytes is quoted only so far.
const maxQuoted = 128

func (v *validator) errorf(path, format string, args ...any) {
	for i, a := range args {
		if s, ok := a.(string); ok && len(s) > maxQuoted {
			args[i] = strings.ToValidUTF8(s[:maxQuoted], "") + fmt.Sprintf("... (%d bytes)", len(s))
		}
	}
	v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (v *validator) name(path, name string, seen map[string]bool) {
	switch {
	case name == "":
		v.errorf(path+".name", "required")
	case !namePattern.MatchString(name):
		v.errorf(path+".name", "%q must be lower-case letters, digits, '.', '_' or '-' (at most 63)", name)
	case seen[name]:
		v.errorf(path+".name", "%q is used twice", name)
	}
	seen[name] = true
}

// Bounds of a policy. The control plane's memory, Envoy's and the time
// of a push all grow with them; 10,000 routes is the size the latency
// lab measures. No client sends a path of megabytes (Envoy refuses a
// request head over 60 KiB by default), so a prefix that long is a
// mistake that could never match.
const (
	MaxListeners        = 64
	MaxRoutes           = 10_000
	MaxBackends         = 10_000
	MaxEndpoints        = 1_000 // per back end
	MaxAuthPolicies     = 1_000
	MaxKeys             = 100    // JWKs per auth policy
	MaxAPIKeys          = 10_000 // per auth policy
	MaxHostsPerRoute    = 100
	MaxHeadersPerRoute  = 32
	MaxOrigins          = 100
	MaxPathBytes        = 4096 // a route's path or prefix
	MaxHeaderValueBytes = 1024 // a header matcher's value
	MaxHostBytes        = 261  // a DNS name (253) with a wildcard and a port
	MaxAudiences        = 100  // audiences and required scopes, each
)

// counts checks the size of every list of a policy before anything else
// reads it: a policy of a million routes is refused with one line, not a
// million.
func (v *validator) counts(p *policyv1.Policy) bool {
	ok := true
	check := func(path string, n, max int) {
		if n > max {
			v.errorf(path, "%d entries, more than the %d allowed", n, max)
			ok = false
		}
	}
	check("listeners", len(p.GetListeners()), MaxListeners)
	check("routes", len(p.GetRoutes()), MaxRoutes)
	check("backends", len(p.GetBackends()), MaxBackends)
	check("auth_policies", len(p.GetAuthPolicies()), MaxAuthPolicies)
	if !ok {
		return false
	}
	for i, b := range p.GetBackends() {
		check(fmt.Sprintf("backends[%d].endpoints", i), len(b.GetEndpoints()), MaxEndpoints)
		check(fmt.Sprintf("backends[%d].draining_endpoints", i), len(b.GetDrainingEndpoints()), MaxEndpoints)
		check(fmt.Sprintf("backends[%d].endpoint_max_streams", i), len(b.GetEndpointMaxStreams()), MaxEndpoints)
	}
	for i, r := range p.GetRoutes() {
		path := fmt.Sprintf("routes[%d]", i)
		check(path+".match.hosts", len(r.GetMatch().GetHosts()), MaxHostsPerRoute)
		check(path+".match.headers", len(r.GetMatch().GetHeaders()), MaxHeadersPerRoute)
		check(path+".cors.allow_origins", len(r.GetCors().GetAllowOrigins()), MaxOrigins)
		check(path+".clients.allow", len(r.GetClients().GetAllow()), contract.MaxClientCIDRs)
		check(path+".clients.deny", len(r.GetClients().GetDeny()), contract.MaxClientCIDRs)
		m := r.GetMatch()
		for _, f := range []struct{ name, val string }{{"path", m.GetPath()}, {"prefix", m.GetPrefix()}} {
			if len(f.val) > MaxPathBytes {
				v.errorf(path+".match."+f.name, "%d bytes, more than the %d allowed", len(f.val), MaxPathBytes)
				ok = false
			}
		}
		for j, h := range m.GetHosts() {
			if len(h) > MaxHostBytes {
				v.errorf(fmt.Sprintf("%s.match.hosts[%d]", path, j), "%d bytes, more than the %d allowed", len(h), MaxHostBytes)
				ok = false
			}
		}
		for j, h := range m.GetHeaders() {
			if n := max(len(h.GetExact()), len(h.GetPrefix())); n > MaxHeaderValueBytes {
				v.errorf(fmt.Sprintf("%s.match.headers[%d]", path, j), "value of %d bytes, more than the %d allowed", n, MaxHeaderValueBytes)
				ok = false
			}
		}
	}
	for i, a := range p.GetAuthPolicies() {
		path := fmt.Sprintf("auth_policies[%d]", i)
		check(path+".jwt.keys", len(a.GetJwt().GetKeys()), MaxKeys)
		check(path+".api_keys", len(a.GetApiKeys()), MaxAPIKeys)
		check(path+".origins.allow", len(a.GetOrigins().GetAllow()), MaxOrigins)
		check(path+".jwt.audiences", len(a.GetJwt().GetAudiences()), MaxAudiences)
		check(path+".jwt.required_scopes", len(a.GetJwt().GetRequiredScopes()), MaxAudiences)
		check(path+".quotas.identity_max_streams", len(a.GetQuotas().GetIdentityMaxStreams()), contract.MaxQuotaIdentities)
	}
	return ok
}

func (v *validator) policy(p *policyv1.Policy) {
	if !v.counts(p) {
		return
	}
	listeners := map[string]bool{}
	if len(p.GetListeners()) == 0 {
		v.errorf("listeners", "at least one listener is required")
	}
	addrs := map[string]string{} // address -> who uses it
	for i, l := range p.GetListeners() {
		path := fmt.Sprintf("listeners[%d]", i)
		v.name(path, l.GetName(), listeners)
		v.address(path+".address", l.GetAddress())
		v.uniqueAddress(path+".address", l.GetAddress(), addrs)
		if t := l.GetTls(); t != nil && (t.GetCertFile() == "" || t.GetKeyFile() == "") {
			v.errorf(path+".tls", "cert_file and key_file are both required")
		}
		v.limits(path+".limits", l)
	}
	backends := map[string]*policyv1.Backend{}
	backendNames := map[string]bool{}
	for i, b := range p.GetBackends() {
		path := fmt.Sprintf("backends[%d]", i)
		v.name(path, b.GetName(), backendNames)
		backends[b.GetName()] = b
		if len(b.GetEndpoints()) == 0 && !b.GetDiscovered() {
			v.errorf(path+".endpoints", "at least one endpoint is required")
		}
		for j, ep := range b.GetEndpoints() {
			epPath := fmt.Sprintf("%s.endpoints[%d]", path, j)
			v.endpoint(epPath, ep)
			if why := InternalTarget(ep); why != "" && !b.GetAllowInternal() {
				v.errorf(epPath, "%s: a route to it would serve it to every client; set allow_internal: true on the back end if it really is one", why)
			}
		}
		v.positive(path+".connect_timeout", b.GetConnectTimeout())
		if d := b.GetDnsRefresh(); d != nil && d.AsDuration() < MinDNSRefresh {
			v.errorf(path+".dns_refresh", "at least %v", MinDNSRefresh)
		}
		v.backend(path, b)
	}
	auths := map[string]bool{}
	for i, a := range p.GetAuthPolicies() {
		v.auth(fmt.Sprintf("auth_policies[%d]", i), a, auths)
	}
	routes := map[string]bool{}
	edited := FilterEditedHeaders(p)
	for i, r := range p.GetRoutes() {
		path := fmt.Sprintf("routes[%d]", i)
		v.route(path, r, routes, listeners, backends, auths, len(p.GetListeners()), addrs, edited)
		for j, h := range r.GetMatch().GetHeaders() {
			if why, ok := edited[h.GetName()]; ok {
				v.errorf(fmt.Sprintf("%s.match.headers[%d].name", path, j),
					"%q is %s: the handshake filter edits it, and Envoy would match the edited request to another route than the one it checked", h.GetName(), why)
			}
		}
	}
}

// FilterEditedHeaders lists the headers the handshake filter may read,
// remove or set on some request, each with why: token sources, and
// identity and claim headers (removed from every request). A route must
// not match on them: Envoy matches a request again after the filter edits
// it, and could pick a route whose policy never ran.
func FilterEditedHeaders(p *policyv1.Policy) map[string]string {
	out := map[string]string{contract.RouteMarkerHeader: "the handshake filter's route marker"}
	for _, a := range p.GetAuthPolicies() {
		for _, s := range a.GetSources() {
			switch src := s.GetSource().(type) {
			case *policyv1.TokenSource_Bearer:
				out["authorization"] = fmt.Sprintf("a token source of auth policy %q", a.GetName())
			case *policyv1.TokenSource_Header:
				out[src.Header] = fmt.Sprintf("a token source of auth policy %q", a.GetName())
			case *policyv1.TokenSource_SubprotocolPrefix:
				out["sec-websocket-protocol"] = fmt.Sprintf("a token source of auth policy %q", a.GetName())
			}
		}
		if h := a.GetIdentityHeader(); h != "" {
			out[h] = fmt.Sprintf("the identity header of auth policy %q", a.GetName())
		}
		for claim, h := range a.GetClaimHeaders() {
			out[h] = fmt.Sprintf("the header of claim %q of auth policy %q", claim, a.GetName())
		}
	}
	return out
}

func (v *validator) route(path string, r *policyv1.Route, seen, listeners map[string]bool, backends map[string]*policyv1.Backend, auths map[string]bool, nListeners int, addrs map[string]string, edited map[string]string) {
	v.name(path, r.GetName(), seen)
	if r.GetKind() == KindWebSocket && r.GetMode() == ModeTCP {
		v.tcpRoute(path, r, backends, auths, addrs)
		return
	}
	if r.GetTcp() != nil {
		v.errorf(path+".tcp", "only websocket routes in mode %q have a tcp listener", ModeTCP)
	}
	switch {
	case r.GetListener() == "" && nListeners > 1:
		v.errorf(path+".listener", "required when the policy has more than one listener")
	case r.GetListener() != "" && !listeners[r.GetListener()]:
		v.errorf(path+".listener", "no listener named %q", r.GetListener())
	}
	m := r.GetMatch()
	switch {
	case m.GetPrefix() == "" && m.GetPath() == "":
		v.errorf(path+".match", "one of prefix and path is required")
	case m.GetPrefix() != "" && m.GetPath() != "":
		v.errorf(path+".match", "prefix and path are exclusive")
	case !strings.HasPrefix(m.GetPrefix()+m.GetPath(), "/"):
		v.errorf(path+".match", "a path must start with '/'")
	}
	for i, h := range m.GetHosts() {
		if !hostPattern.MatchString(h) {
			v.errorf(fmt.Sprintf("%s.match.hosts[%d]", path, i), "%q is not a lower-case host name (a leading \"*.\" is allowed)", h)
		}
	}
	for i, h := range m.GetHeaders() {
		hp := fmt.Sprintf("%s.match.headers[%d]", path, i)
		v.headerName(hp+".name", h.GetName())
		n := 0
		for _, set := range []bool{h.GetExact() != "", h.GetPrefix() != "", h.GetPresent()} {
			if set {
				n++
			}
		}
		if n != 1 {
			v.errorf(hp, "exactly one of exact, prefix and present")
		}
	}
	v.positive(path+".max_stream_duration", r.GetMaxStreamDuration())
	// REST routes have lists too: the REST chain starts with the same
	// handshake filter.
	v.clients(path+".clients", r.GetClients())
	if r.GetKind() != KindHTTP {
		if r.GetCors() != nil {
			v.errorf(path+".cors", "only http routes have CORS: the upgrade chain is minimal by design")
		}
		if r.GetRateLimit() != nil {
			v.errorf(path+".rate_limit", "only http routes have a rate limit: the upgrade chain is minimal by design")
		}
	}
	if c := r.GetCors(); c != nil {
		if len(c.GetAllowOrigins()) == 0 {
			v.errorf(path+".cors.allow_origins", "at least one origin is required")
		}
		for i, o := range c.GetAllowOrigins() {
			if !originPattern.MatchString(o) {
				v.errorf(fmt.Sprintf("%s.cors.allow_origins[%d]", path, i), "%q is neither an origin (https://host[:port]) nor a wildcard (*.example.com)", o)
			}
		}
		v.positive(path+".cors.max_age", c.GetMaxAge())
	}
	if rl := r.GetRateLimit(); rl != nil {
		if rl.GetRequestsPerUnit() == 0 {
			v.errorf(path+".rate_limit.requests_per_unit", "must be positive")
		}
		if _, ok := RateLimitUnits[rl.GetUnit()]; !ok {
			v.errorf(path+".rate_limit.unit", "%q is not second, minute or hour", rl.GetUnit())
		}
	}
	switch r.GetKind() {
	case KindWebSocket:
		if mode := r.GetMode(); mode != "" && mode != ModeUpgrade {
			v.errorf(path+".mode", "%q is not a supported mode (want %q or %q)", mode, ModeUpgrade, ModeTCP)
		}
	case KindHTTP:
		if r.GetMode() != "" {
			v.errorf(path+".mode", "only websocket routes have a mode")
		}
	case "":
		v.errorf(path+".kind", "required: %q or %q", KindWebSocket, KindHTTP)
	default:
		v.errorf(path+".kind", "%q is not %q or %q", r.GetKind(), KindWebSocket, KindHTTP)
	}
	if r.GetRedirect() != nil {
		v.redirect(path, r)
	} else {
		v.routeBackends(path, r, backends)
	}
	v.rewrite(path, r)
	v.headerEdits(path, r, edited)
	if r.GetAuth() != "" && !auths[r.GetAuth()] {
		v.errorf(path+".auth", "no auth policy named %q", r.GetAuth())
	}
	if d := r.GetIdleTimeout(); d != nil && d.AsDuration() < 0 {
		v.errorf(path+".idle_timeout", "must not be negative")
	}
}

// Bounds of a route's routing features.
const (
	MaxSplitBackends     = 16
	MaxSplitWeight       = 10_000
	MaxHeaderEdits       = 32 // each of a route's four header lists
	MinDNSRefresh        = time.Second
	DefaultDNSRefresh    = 5 * time.Second
	maxRewriteBytes      = MaxPathBytes
	maxEditedHeaderValue = MaxHeaderValueBytes
)

// routeBackends checks backend, or the weighted split in backends.
func (v *validator) routeBackends(path string, r *policyv1.Route, backends map[string]*policyv1.Backend) {
	split := r.GetBackends()
	switch {
	case r.GetBackend() != "" && len(split) > 0:
		v.errorf(path+".backends", "backend and backends are exclusive")
		return
	case r.GetBackend() != "":
		if backends[r.GetBackend()] == nil {
			v.errorf(path+".backend", "no backend named %q", r.GetBackend())
		}
		return
	case len(split) == 0:
		v.errorf(path+".backend", "required (or a weighted split in backends)")
		return
	}
	if len(split) < 2 {
		v.errorf(path+".backends", "a split needs at least two back ends; name one in backend")
	}
	if len(split) > MaxSplitBackends {
		v.errorf(path+".backends", "%d entries, more than the %d allowed", len(split), MaxSplitBackends)
		return
	}
	if r.GetMaxConnections() > 0 {
		// A per-route limit is a circuit breaker on one cluster; a split
		// spans several, each of which would count on its own.
		v.errorf(path+".max_connections", "not with a weighted split (backends)")
	}
	seen := map[string]bool{}
	var total uint32
	for i, wb := range split {
		wp := fmt.Sprintf("%s.backends[%d]", path, i)
		b := backends[wb.GetName()]
		switch {
		case wb.GetName() == "":
			v.errorf(wp+".name", "required")
		case b == nil:
			v.errorf(wp+".name", "no backend named %q", wb.GetName())
		case seen[wb.GetName()]:
			v.errorf(wp+".name", "%q is listed twice", wb.GetName())
		case b.GetLb() == LBRingHash:
			// The split picks a back end at random before any hash is
			// taken: session affinity would not hold across it.
			v.errorf(wp+".name", "%q uses lb %q, which a split would defeat", wb.GetName(), LBRingHash)
		}
		seen[wb.GetName()] = true
		if wb.GetWeight() > MaxSplitWeight {
			v.errorf(wp+".weight", "at most %d", MaxSplitWeight)
		}
		total += wb.GetWeight()
	}
	if total == 0 {
		v.errorf(path+".backends", "at least one weight must be positive")
	}
}

// rewrite checks a route's path rewrite.
// redirectCodes are the statuses a redirect may answer with.
var redirectCodes = map[uint32]bool{0: true, 301: true, 302: true, 303: true, 307: true, 308: true}

// redirect checks a redirecting route: it answers by itself, so nothing
// that forwards belongs on it.
func (v *validator) redirect(path string, r *policyv1.Route) {
	rd, at := r.GetRedirect(), path+".redirect"
	if r.GetKind() != KindHTTP {
		v.errorf(at, "only http routes redirect: a WebSocket handshake is forwarded or refused")
	}
	if r.GetBackend() != "" || len(r.GetBackends()) > 0 {
		v.errorf(at, "a redirect is in place of backend and backends")
	}
	if r.GetRewrite() != nil || r.GetMaxConnections() > 0 || len(r.GetRequestHeadersToAdd()) > 0 || len(r.GetRequestHeadersToRemove()) > 0 {
		v.errorf(at, "a redirect forwards nothing: no rewrite, max_connections or request header edits")
	}
	switch s := rd.GetScheme(); s {
	case "", "http", "https":
	default:
		v.errorf(at+".scheme", "%q is not http or https", s)
	}
	if h := rd.GetHost(); h != "" && (strings.HasPrefix(h, "*") || strings.Contains(h, ":") || !hostPattern.MatchString(h)) {
		v.errorf(at+".host", "%q is not a lower-case host name (the port goes in port)", h)
	}
	if rd.GetPort() > 65535 {
		v.errorf(at+".port", "%d is not a port", rd.GetPort())
	}
	if !redirectCodes[rd.GetStatusCode()] {
		v.errorf(at+".status_code", "%d is not 301, 302, 303, 307 or 308", rd.GetStatusCode())
	}
	if rd.GetPath() != "" && rd.GetPrefix() != "" {
		v.errorf(at, "path and prefix are exclusive")
	}
	if rd.GetPrefix() != "" && r.GetMatch().GetPrefix() == "" {
		v.errorf(at+".prefix", "needs a route with a prefix match")
	}
	v.paths(at, rd.GetPrefix(), rd.GetPath())
}

func (v *validator) rewrite(path string, r *policyv1.Route) {
	rw := r.GetRewrite()
	if rw == nil {
		return
	}
	if rw.GetPrefix() != "" && rw.GetPath() != "" {
		v.errorf(path+".rewrite", "prefix and path are exclusive")
	}
	if rw.GetPrefix() == "" && rw.GetPath() == "" {
		v.errorf(path+".rewrite", "one of prefix and path is required")
	}
	v.paths(path+".rewrite", rw.GetPrefix(), rw.GetPath())
}

// paths checks the prefix and path of a rewrite or a redirect.
func (v *validator) paths(at, prefix, path string) {
	for _, f := range []struct{ name, val string }{{"prefix", prefix}, {"path", path}} {
		switch {
		case f.val == "":
		case len(f.val) > maxRewriteBytes:
			v.errorf(at+"."+f.name, "%d bytes, more than the %d allowed", len(f.val), maxRewriteBytes)
		case !strings.HasPrefix(f.val, "/"):
			v.errorf(at+"."+f.name, "%q must start with '/'", f.val)
		case !rewritePattern.MatchString(f.val):
			// A path carries no query, fragment, space or escape: what
			// the back end receives (or the Location says) is exactly
			// what the policy says.
			v.errorf(at+"."+f.name, "%q is not a path (letters, digits and -._~!$&'()*+,;=:@/ only)", f.val)
		}
	}
}

// forbiddenEditedHeaders are the headers a route may not set or remove:
// pseudo-headers cannot be written, and the others frame the message,
// decide the upgrade, or name the route Envoy matched.
var forbiddenEditedHeaders = map[string]bool{
	"host": true, "connection": true, "upgrade": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "te": true, "trailer": true, "content-length": true,
	"x-forwarded-for": true, "x-forwarded-proto": true, "x-request-id": true,
}

// headerEdits checks a route's header add and remove lists.
func (v *validator) headerEdits(path string, r *policyv1.Route, edited map[string]string) {
	adds := map[string][]*policyv1.HeaderValue{
		"request_headers_to_add":  r.GetRequestHeadersToAdd(),
		"response_headers_to_add": r.GetResponseHeadersToAdd(),
	}
	removes := map[string][]string{
		"request_headers_to_remove":  r.GetRequestHeadersToRemove(),
		"response_headers_to_remove": r.GetResponseHeadersToRemove(),
	}
	edits := false
	for _, l := range adds {
		edits = edits || len(l) > 0
	}
	for _, l := range removes {
		edits = edits || len(l) > 0
	}
	if !edits {
		return
	}
	if r.GetKind() != KindHTTP {
		// The upgrade chain is minimal: the handshake filter owns what a
		// stream's head carries.
		v.errorf(path, "only http routes add or remove headers: the upgrade chain is minimal by design")
		return
	}
	check := func(fp, name string, request bool) {
		switch {
		case !headerPattern.MatchString(name):
			v.errorf(fp, "%q is not a lower-case header name", name)
		case forbiddenEditedHeaders[name] || strings.HasPrefix(name, "x-envoy-"):
			v.errorf(fp, "%q is set by Envoy or frames the message; a route may not change it", name)
		case request && edited[name] != "":
			v.errorf(fp, "%q is %s: a route must not write it", name, edited[name])
		}
	}
	for _, field := range []string{"request_headers_to_add", "response_headers_to_add"} {
		list := adds[field]
		if len(list) > MaxHeaderEdits {
			v.errorf(path+"."+field, "%d entries, more than the %d allowed", len(list), MaxHeaderEdits)
			continue
		}
		seen := map[string]bool{}
		for i, h := range list {
			hp := fmt.Sprintf("%s.%s[%d]", path, field, i)
			check(hp+".name", h.GetName(), field == "request_headers_to_add")
			if seen[h.GetName()] {
				v.errorf(hp+".name", "%q is set twice", h.GetName())
			}
			seen[h.GetName()] = true
			switch val := h.GetValue(); {
			case len(val) > maxEditedHeaderValue:
				v.errorf(hp+".value", "%d bytes, more than the %d allowed", len(val), maxEditedHeaderValue)
			case strings.ContainsFunc(val, func(c rune) bool { return c < 0x20 && c != '\t' || c == 0x7f }):
				v.errorf(hp+".value", "has a control character")
			}
		}
	}
	for _, field := range []string{"request_headers_to_remove", "response_headers_to_remove"} {
		list := removes[field]
		if len(list) > MaxHeaderEdits {
			v.errorf(path+"."+field, "%d entries, more than the %d allowed", len(list), MaxHeaderEdits)
			continue
		}
		for i, h := range list {
			check(fmt.Sprintf("%s.%s[%d]", path, field, i), h, field == "request_headers_to_remove")
		}
	}
}

// tcpRoute checks a websocket route carried by its own tcp_proxy listener.
func (v *validator) tcpRoute(path string, r *policyv1.Route, backends map[string]*policyv1.Backend, auths map[string]bool, addrs map[string]string) {
	if r.GetTcp().GetAddress() == "" {
		v.errorf(path+".tcp.address", "required in mode %q", ModeTCP)
	} else {
		v.address(path+".tcp.address", r.GetTcp().GetAddress())
		v.uniqueAddress(path+".tcp.address", r.GetTcp().GetAddress(), addrs)
	}
	if r.GetAuth() != "" && !auths[r.GetAuth()] {
		v.errorf(path+".auth", "no auth policy named %q", r.GetAuth())
	}
	if r.GetAuth() != "" && r.GetTcp().GetRaw() {
		v.errorf(path+".tcp.raw", "a route with auth is checked: it cannot be raw")
	}
	if r.GetMatch() != nil {
		v.errorf(path+".match", "a tcp route takes the whole listener: it has no match")
	}
	if r.GetListener() != "" {
		v.errorf(path+".listener", "a tcp route has its own listener (tcp.address)")
	}
	if r.GetCors() != nil || r.GetRateLimit() != nil || r.GetMaxConnections() != 0 {
		v.errorf(path, "cors, rate_limit and max_connections are for HTTP routes")
	}
	if len(r.GetBackends()) > 0 {
		v.errorf(path+".backends", "a tcp route forwards to one back end: name it in backend")
	}
	if r.GetRewrite() != nil {
		v.errorf(path+".rewrite", "a tcp route forwards bytes unchanged: it has no path to rewrite")
	}
	if len(r.GetRequestHeadersToAdd())+len(r.GetRequestHeadersToRemove())+len(r.GetResponseHeadersToAdd())+len(r.GetResponseHeadersToRemove()) > 0 {
		v.errorf(path, "only http routes add or remove headers")
	}
	if r.GetClients() != nil && r.GetTcp().GetRaw() {
		v.errorf(path+".clients", "a raw tcp route runs no handshake module to check client addresses")
	}
	v.clients(path+".clients", r.GetClients())
	if r.GetBackend() == "" {
		v.errorf(path+".backend", "required")
	} else if backends[r.GetBackend()] == nil {
		v.errorf(path+".backend", "no backend named %q", r.GetBackend())
	}
	v.positive(path+".max_stream_duration", r.GetMaxStreamDuration())
	if d := r.GetIdleTimeout(); d != nil && d.AsDuration() < 0 {
		v.errorf(path+".idle_timeout", "must not be negative")
	}
}

// clients checks a route's client address lists as the module will read
// them (auth.ParseCIDR): a list the module would refuse must not reach
// Envoy.
func (v *validator) clients(path string, c *policyv1.ClientAddresses) {
	if c == nil {
		return
	}
	if len(c.GetAllow()) == 0 && len(c.GetDeny()) == 0 {
		v.errorf(path, "set allow, deny or both")
	}
	for _, l := range []struct {
		name  string
		cidrs []string
	}{{"allow", c.GetAllow()}, {"deny", c.GetDeny()}} {
		for i, s := range l.cidrs {
			if _, err := auth.ParseCIDR(s); err != nil {
				v.errorf(fmt.Sprintf("%s.%s[%d]", path, l.name, i), "%v", err)
			}
		}
	}
}

func (v *validator) backend(path string, b *policyv1.Backend) {
	switch b.GetLb() {
	case "", LBRoundRobin, LBLeastRequest, LBLeastStreams:
		if b.GetHashHeader() != "" {
			v.errorf(path+".hash_header", "only with lb %q", LBRingHash)
		}
	case LBRingHash:
		if b.GetHashHeader() == "" {
			v.errorf(path+".hash_header", "required with lb %q", LBRingHash)
		} else {
			v.headerName(path+".hash_header", b.GetHashHeader())
		}
	default:
		v.errorf(path+".lb", "%q is not %s, %s, %s or %s", b.GetLb(), LBRoundRobin, LBLeastRequest, LBLeastStreams, LBRingHash)
	}
	listed := map[string]bool{}
	for _, ep := range b.GetEndpoints() {
		listed[ep] = true
	}
	v.leastStreams(path, b, listed)
	for i, ep := range b.GetDrainingEndpoints() {
		if !listed[ep] {
			v.errorf(fmt.Sprintf("%s.draining_endpoints[%d]", path, i), "%q is not one of the endpoints", ep)
		}
	}
	if hc := b.GetHealthCheck(); hc != nil {
		if hc.GetPath() != "" && !strings.HasPrefix(hc.GetPath(), "/") {
			v.errorf(path+".health_check.path", "must start with '/'")
		}
		v.positive(path+".health_check.interval", hc.GetInterval())
		v.positive(path+".health_check.timeout", hc.GetTimeout())
	}
	if od := b.GetOutlierDetection(); od != nil {
		v.positive(path+".outlier_detection.interval", od.GetInterval())
		v.positive(path+".outlier_detection.base_ejection_time", od.GetBaseEjectionTime())
		if od.GetMaxEjectionPercent() > 100 {
			v.errorf(path+".outlier_detection.max_ejection_percent", "at most 100")
		}
	}
	if t := b.GetTls(); t != nil {
		if t.GetCaFile() == "" {
			v.errorf(path+".tls.ca_file", "required: upstream TLS is always verified")
		}
		// Without a name to check, any certificate the CA signed would
		// pass, whichever service it was issued to.
		if t.GetSni() == "" {
			v.errorf(path+".tls.sni", "required: the back end's certificate is checked against this name (or the san list)")
		} else if !dnsNamePattern.MatchString(t.GetSni()) {
			v.errorf(path+".tls.sni", "%q is not a lower-case DNS name", t.GetSni())
		}
		for i, san := range t.GetSan() {
			if !dnsNamePattern.MatchString(san) {
				v.errorf(fmt.Sprintf("%s.tls.san[%d]", path, i), "%q is not a lower-case DNS name", san)
			}
		}
	}
}

// leastStreams checks the settings of a least_streams back end, which
// only it may have.
func (v *validator) leastStreams(path string, b *policyv1.Backend, listed map[string]bool) {
	if b.GetLb() != LBLeastStreams {
		for field, set := range map[string]bool{
			"max_streams": b.GetMaxStreams() > 0, "endpoint_max_streams": len(b.GetEndpointMaxStreams()) > 0,
			"slow_start": b.GetSlowStart() != nil,
		} {
			if set {
				v.errorf(path+"."+field, "only with lb %q", LBLeastStreams)
			}
		}
	}
	if b.GetLb() == LBLeastStreams && isDNS(b) {
		v.errorf(path+".lb", "%q needs IP endpoints: its weights travel by EDS, and a back end named by DNS has none", LBLeastStreams)
	}
	if b.GetMaxStreams() > MaxEndpointStreams {
		v.errorf(path+".max_streams", "at most %d", MaxEndpointStreams)
	}
	for _, ep := range slices.Sorted(maps.Keys(b.GetEndpointMaxStreams())) {
		switch n := b.GetEndpointMaxStreams()[ep]; {
		case !listed[ep]:
			v.errorf(path+".endpoint_max_streams", "%q is not one of the endpoints", ep)
		case n == 0 || n > MaxEndpointStreams:
			v.errorf(path+".endpoint_max_streams", "%q: want 1 to %d", ep, MaxEndpointStreams)
		}
	}
	if d := b.GetSlowStart(); d != nil && (d.AsDuration() < 0 || d.AsDuration() > MaxSlowStart) {
		v.errorf(path+".slow_start", "want 0s (off) to %v", MaxSlowStart)
	}
	if p := b.GetDrainPath(); p != "" && (len(p) > MaxPathBytes || !rewritePattern.MatchString(p)) {
		v.errorf(path+".drain_path", "%q is not a path: it starts with '/' and holds no query", p)
	}
}

func isDNS(b *policyv1.Backend) bool { return slices.ContainsFunc(b.GetEndpoints(), IsDNSEndpoint) }

// Bounds of the listener limits an operator may set: Envoy's own ranges,
// and no timeout so long that a slow head is as good as none.
const (
	maxTrustedProxyHops       = 16
	maxRequestHeadersTimeout  = 5 * time.Minute
	minConnectionIdleTimeout  = time.Second
	maxConnectionIdleTimeout  = time.Hour
	minHTTP2Window            = 65535
	maxHTTP2Window            = 1<<31 - 1
	maxHTTP2ConcurrentStreams = 1<<31 - 1
	minHTTP2Keepalive         = time.Second
	maxHTTP2KeepaliveInterval = time.Hour
	maxHTTP2KeepaliveTimeout  = 5 * time.Minute
)

func (v *validator) limits(path string, l *policyv1.Listener) {
	lim := l.GetLimits()
	if lim == nil {
		return
	}
	if lim.GetTrustedProxyHops() > maxTrustedProxyHops {
		v.errorf(path+".trusted_proxy_hops", "at most %d", maxTrustedProxyHops)
	}
	if d := lim.GetRequestHeadersTimeout(); d != nil && (d.AsDuration() <= 0 || d.AsDuration() > maxRequestHeadersTimeout) {
		v.errorf(path+".request_headers_timeout", "must be positive and at most %v", maxRequestHeadersTimeout)
	}
	// Zero would turn Envoy's idle timeout off: connections lost without
	// a FIN, and idle ones a client opens on purpose, held for ever.
	if d := lim.GetConnectionIdleTimeout(); d != nil && (d.AsDuration() < minConnectionIdleTimeout || d.AsDuration() > maxConnectionIdleTimeout) {
		v.errorf(path+".connection_idle_timeout", "want %v to %v", minConnectionIdleTimeout, maxConnectionIdleTimeout)
	}
	// Zero would turn the PINGs off, and a vanished client would hold its
	// WebSockets until their idle timeout again.
	for _, k := range []struct {
		field string
		d     *durationpb.Duration
		max   time.Duration
	}{
		{"http2_keepalive_interval", lim.GetHttp2KeepaliveInterval(), maxHTTP2KeepaliveInterval},
		{"http2_keepalive_timeout", lim.GetHttp2KeepaliveTimeout(), maxHTTP2KeepaliveTimeout},
	} {
		switch {
		case k.d == nil:
		case !l.GetHttp2():
			v.errorf(path+"."+k.field, "the listener does not accept HTTP/2 (http2: true)")
		case k.d.AsDuration() < minHTTP2Keepalive || k.d.AsDuration() > k.max:
			v.errorf(path+"."+k.field, "want %v to %v", minHTTP2Keepalive, k.max)
		}
	}
	h2 := map[string]uint32{
		"http2_max_concurrent_streams":         lim.GetHttp2MaxConcurrentStreams(),
		"http2_initial_stream_window_size":     lim.GetHttp2InitialStreamWindowSize(),
		"http2_initial_connection_window_size": lim.GetHttp2InitialConnectionWindowSize(),
	}
	for _, field := range []string{"http2_max_concurrent_streams", "http2_initial_stream_window_size", "http2_initial_connection_window_size"} {
		n := h2[field]
		switch {
		case n == 0:
		case !l.GetHttp2():
			v.errorf(path+"."+field, "the listener does not accept HTTP/2 (http2: true)")
		case field == "http2_max_concurrent_streams" && n > maxHTTP2ConcurrentStreams:
			v.errorf(path+"."+field, "at most %d", maxHTTP2ConcurrentStreams)
		case field != "http2_max_concurrent_streams" && (n < minHTTP2Window || n > maxHTTP2Window):
			v.errorf(path+"."+field, "must be %d to %d bytes", minHTTP2Window, maxHTTP2Window)
		}
	}
}

func (v *validator) positive(path string, d *durationpb.Duration) {
	if d != nil && d.AsDuration() <= 0 {
		v.errorf(path, "must be positive")
	}
}

func (v *validator) uniqueAddress(path, addr string, used map[string]string) {
	if other, ok := used[addr]; ok {
		v.errorf(path, "%s is already used by %s", addr, other)
		return
	}
	used[addr] = path
}

// headerName checks a header name used for matching or hashing.
func (v *validator) headerName(path, h string) {
	if !headerPattern.MatchString(h) {
		v.errorf(path, "%q is not a lower-case header name", h)
	}
}

func (v *validator) auth(path string, a *policyv1.AuthPolicy, seen map[string]bool) {
	v.name(path, a.GetName(), seen)
	if len(a.GetSources()) == 0 {
		v.errorf(path+".sources", "at least one token source is required")
	}
	for i, s := range a.GetSources() {
		sp := fmt.Sprintf("%s.sources[%d]", path, i)
		switch src := s.GetSource().(type) {
		case *policyv1.TokenSource_Bearer:
			if !src.Bearer {
				v.errorf(sp+".bearer", "must be true when set")
			}
		case *policyv1.TokenSource_Query:
			if src.Query == "" {
				v.errorf(sp+".query", "a parameter name is required")
			}
		case *policyv1.TokenSource_Header:
			v.header(sp+".header", src.Header)
		case *policyv1.TokenSource_SubprotocolPrefix:
			if !subprotocolPattern.MatchString(src.SubprotocolPrefix) {
				v.errorf(sp+".subprotocol_prefix", "%q is not a subprotocol token prefix", src.SubprotocolPrefix)
			}
		default:
			v.errorf(sp, "one of bearer, query, header and subprotocol_prefix is required")
		}
	}
	j := a.GetJwt()
	if len(j.GetKeys()) == 0 && j.GetJwksFile() == "" && j.GetJwksUrl() == "" && len(a.GetApiKeys()) == 0 {
		v.errorf(path, "needs jwt keys (keys, jwks_file or jwks_url) or api_keys: a policy that accepts nothing is a mistake")
	}
	kids := map[string]bool{}
	for i, k := range j.GetKeys() {
		kp := fmt.Sprintf("%s.jwt.keys[%d]", path, i)
		if kids[k.GetKid()] {
			v.errorf(kp+".kid", "%q is used twice", k.GetKid())
		}
		kids[k.GetKid()] = true
		if err := ValidateJWK(k, j.GetDefaultRsaAlg()); err != nil {
			v.errorf(kp, "%v", err)
		}
	}
	if u := j.GetJwksUrl(); u != "" {
		if err := CheckJWKSURL(u); err != nil {
			v.errorf(path+".jwt.jwks_url", "%v", err)
		}
	}
	v.positive(path+".jwt.jwks_refresh", j.GetJwksRefresh())
	if alg := j.GetDefaultRsaAlg(); alg != "" && !validRSAAlg(alg) {
		v.errorf(path+".jwt.default_rsa_alg", "%q is not one of %s", alg, strings.Join(RSAAlgs, ", "))
	}
	// Keys the control plane fetches are an identity provider's, which
	// signs tokens for every application it serves: without an audience,
	// a token minted for any of them would open this one.
	if (j.GetJwksFile() != "" || j.GetJwksUrl() != "") && len(j.GetAudiences()) == 0 {
		v.errorf(path+".jwt.audiences", "required with jwks_file or jwks_url: name the audience tokens for this service carry")
	}
	for i, o := range a.GetOrigins().GetAllow() {
		if !allowedOriginPattern.MatchString(strings.ToLower(o)) {
			v.errorf(fmt.Sprintf("%s.origins.allow[%d]", path, i), "%q is not scheme://host[:port] (a leading \"*.\" on the host is allowed)", o)
		}
	}
	if o := a.GetOrigins(); o != nil && len(o.GetAllow()) == 0 && !o.GetAllowMissing() {
		v.errorf(path+".origins", "allows nothing: list origins in allow")
	}
	v.quotas(path+".quotas", a.GetQuotas())
	if l := a.GetJwt().GetLeeway(); l != nil && l.AsDuration() < 0 {
		v.errorf(path+".jwt.leeway", "must not be negative")
	}
	if l := a.GetJwt().GetMaxTokenLifetime(); l != nil {
		if d := l.AsDuration(); d < time.Second || d > contract.MaxTokenLifetimeSeconds*time.Second || d%time.Second != 0 {
			v.errorf(path+".jwt.max_token_lifetime", "must be whole seconds from 1s to %ds", contract.MaxTokenLifetimeSeconds)
		}
	}
	if c := a.GetJwt().GetTokenCache(); c != nil {
		if d := c.AsDuration(); d < 0 || d > contract.MaxTokenCacheSeconds*time.Second || d%time.Second != 0 {
			v.errorf(path+".jwt.token_cache", "must be whole seconds from 0s (off) to %ds", contract.MaxTokenCacheSeconds)
		}
	}
	for i, k := range a.GetApiKeys() {
		kp := fmt.Sprintf("%s.api_keys[%d]", path, i)
		if !sha256Pattern.MatchString(k.GetSha256()) {
			v.errorf(kp+".sha256", "want 64 lower-case hex digits (the SHA-256 of the key)")
		} else if _, err := hex.DecodeString(k.GetSha256()); err != nil {
			v.errorf(kp+".sha256", "%v", err)
		}
		if k.GetIdentity() == "" {
			v.errorf(kp+".identity", "required")
		}
	}
	if h := a.GetIdentityHeader(); h != "" {
		v.header(path+".identity_header", h)
	}
	for claim, h := range a.GetClaimHeaders() {
		if claim == "" {
			v.errorf(path+".claim_headers", "a claim name is empty")
		}
		v.header(path+".claim_headers."+claim, h)
	}
}

func (v *validator) header(path, h string) {
	switch {
	case h == "":
		v.errorf(path, "a header name is required")
	case !headerPattern.MatchString(h):
		v.errorf(path, "%q is not a lower-case header name", h)
	case contract.IsReservedHeader(h):
		v.errorf(path, "%q is reserved", h)
	}
}

// CheckJWKSURL allows https anywhere and plain http on loopback only: keys
// fetched in the clear could be swapped by anyone on the path. The JWKS
// client applies it to every redirect too.
func CheckJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	// A key set from a metadata service is no identity provider's, and
	// fetching one reads the host's credentials.
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
		if why := InternalTarget(netip.AddrPortFrom(ip, 443).String()); why != "" {
			return fmt.Errorf("%q: %s", raw, why)
		}
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http":
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); (err == nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
		return fmt.Errorf("%q: http is allowed on loopback only; use https", raw)
	}
	return fmt.Errorf("%q is not an https URL", raw)
}

// address accepts ip:port only: Envoy's socket addresses and static
// endpoints take IP literals, and resolving names is a job for DNS clusters.
func (v *validator) address(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, "%q is not host:port", addr)
		return
	}
	if _, err := netip.ParseAddr(host); err != nil {
		v.errorf(path, "%q is not an IP address", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.errorf(path, "%q is not a port in 1-65535", port)
	}
}

// endpoint accepts host:port where host is an IP address or a lower-case
// DNS name, which Envoy resolves (translate makes the back end a DNS
// cluster).
func (v *validator) endpoint(path, addr string) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.errorf(path, "%q is not host:port", addr)
		return
	}
	if _, err := netip.ParseAddr(host); err != nil && (len(host) > 253 || !dnsNamePattern.MatchString(host)) {
		v.errorf(path, "%q is neither an IP address nor a lower-case DNS name", host)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.errorf(path, "%q is not a port in 1-65535", port)
	}
}

// IsDNSEndpoint reports whether a valid endpoint names its host rather
// than giving its address.
func IsDNSEndpoint(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	_, err = netip.ParseAddr(host)
	return err != nil
}

// metadataNames are DNS names of cloud metadata services: a back end by
// name reaches them as surely as by address.
var metadataNames = map[string]bool{
	"metadata.google.internal": true, "metadata": true, "instance-data": true,
	"instance-data.ec2.internal": true, "metadata.azure.internal": true,
}

// ec2MetadataV6 is the IPv6 address of EC2's instance metadata service.
var ec2MetadataV6 = netip.MustParseAddr("fd00:ec2::254")

// InternalTarget says why an ip:port is no back end for a public route,
// or "" if nothing is known against it: link-local addresses (where cloud
// metadata services answer, 169.254.169.254 among them), the EC2 IPv6
// metadata address, and addresses no single host answers at.
func InternalTarget(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil && metadataNames[strings.TrimSuffix(host, ".")] {
		return fmt.Sprintf("%s is a cloud metadata service's name", host)
	}
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return ""
	}
	ip := ap.Addr().Unmap()
	switch {
	case ip.IsLinkLocalUnicast():
		return fmt.Sprintf("%s is link-local, where cloud metadata services answer", ip)
	case ip == ec2MetadataV6:
		return fmt.Sprintf("%s is a cloud metadata address", ip)
	case ip.IsUnspecified():
		return fmt.Sprintf("%s is unspecified (any local address)", ip)
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Sprintf("%s is the broadcast address", ip)
	case ip.IsMulticast():
		return fmt.Sprintf("%s is multicast", ip)
	}
	return ""
}

// CheckReserved refuses back-end endpoints at addresses that are never a
// back end, whatever allow_internal says: Envoy's admin interface (its
// /config_dump holds every secret the filter config carries) and the
// control plane's own listeners. Each reserved address is ip:port; an
// endpoint matches one on the same port whose address is the same, or
// loopback or unspecified: Envoy and the control plane usually share a
// host, and a loopback endpoint reaches whatever listens there on that
// port.
//
// A listener there could not bind (Envoy would reject the whole listener
// update), and a jwks_url there would have the control plane read its own
// or Envoy's admin as a key set: both are refused too.
func CheckReserved(p *policyv1.Policy, reserved map[string]string) error {
	var errs []error
	check := func(path, addr, why string) {
		for r, what := range reserved {
			if sameService(addr, r) {
				errs = append(errs, fmt.Errorf("%s: %s is %s (%s): %s", path, addr, what, r, why))
			}
		}
	}
	for i, b := range p.GetBackends() {
		for j, ep := range b.GetEndpoints() {
			check(fmt.Sprintf("backends[%d].endpoints[%d]", i, j), ep, "never a back end")
		}
	}
	for i, l := range p.GetListeners() {
		check(fmt.Sprintf("listeners[%d].address", i), l.GetAddress(), "Envoy could not listen there")
	}
	for i, r := range p.GetRoutes() {
		if a := r.GetTcp().GetAddress(); a != "" {
			check(fmt.Sprintf("routes[%d].tcp.address", i), a, "Envoy could not listen there")
		}
	}
	for i, a := range p.GetAuthPolicies() {
		if u, err := url.Parse(a.GetJwt().GetJwksUrl()); err == nil && u.Host != "" {
			port := u.Port()
			if port == "" {
				port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
			}
			check(fmt.Sprintf("auth_policies[%d].jwt.jwks_url", i), net.JoinHostPort(u.Hostname(), port), "no key set")
		}
	}
	return errors.Join(errs...)
}

// sameService reports whether an endpoint may reach the socket bound to
// a reserved address.
func sameService(endpoint, reserved string) bool {
	// A name may resolve to anything; the one name known to reach the
	// reserved socket is loopback's own.
	if host, port, err := net.SplitHostPort(endpoint); err == nil && (host == "localhost" || strings.HasSuffix(host, ".localhost")) {
		endpoint = net.JoinHostPort("127.0.0.1", port)
	}
	e, err1 := netip.ParseAddrPort(endpoint)
	r, err2 := netip.ParseAddrPort(reserved)
	if err1 != nil || err2 != nil || e.Port() != r.Port() {
		return false
	}
	ip := e.Addr().Unmap()
	return ip == r.Addr().Unmap() || ip.IsLoopback() || ip.IsUnspecified()
}

// quotas checks an auth policy's per-identity limits against the bounds
// the module holds them to.
func (v *validator) quotas(path string, q *policyv1.Quotas) {
	if q == nil {
		return
	}
	if n := q.GetMaxStreams(); n > contract.MaxStreamsPerIdentity {
		v.errorf(path+".max_streams", "%d is more than the %d allowed", n, contract.MaxStreamsPerIdentity)
	}
	for _, id := range slices.Sorted(maps.Keys(q.GetIdentityMaxStreams())) {
		ip := fmt.Sprintf("%s.identity_max_streams[%q]", path, id)
		if id == "" || len(id) > contract.MaxIdentityBytes {
			v.errorf(ip, "an identity must have 1 to %d bytes", contract.MaxIdentityBytes)
		}
		if n := q.GetIdentityMaxStreams()[id]; n > contract.MaxStreamsPerIdentity {
			v.errorf(ip, "%d is more than the %d allowed", n, contract.MaxStreamsPerIdentity)
		}
	}
	if r := q.GetHandshakes(); r != nil {
		if n := r.GetPerSecond(); n < 1 || n > contract.MaxHandshakesPerSecond {
			v.errorf(path+".handshakes.per_second", "must be from 1 to %d", contract.MaxHandshakesPerSecond)
		}
		if n := r.GetBurst(); n > contract.MaxHandshakesPerSecond {
			v.errorf(path+".handshakes.burst", "must be at most %d", contract.MaxHandshakesPerSecond)
		}
	}
}
