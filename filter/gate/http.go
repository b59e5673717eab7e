package gate

import (
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// HTTP decides WebSocket handshakes on HTTP streams: the module's state
// for every plugin (root context) and stream it has been given. A VM is
// single-threaded, so it needs no locking.
type HTTP struct {
	configs map[uint32]*auth.Config // by root context
	streams map[uint32]uint32       // stream context to its root
	quota   *Quota
}

// NewHTTP returns an HTTP gate with no plugin configured.
func NewHTTP() *HTTP {
	return &HTTP{configs: map[uint32]*auth.Config{}, streams: map[uint32]uint32{}, quota: NewQuota()}
}

// Configure parses a plugin's configuration; false makes Envoy reject it,
// and the previous one keeps serving.
func (g *HTTP) Configure(h Host, rootID uint32) bool {
	cfg, ok := parseConfig(h)
	if !ok {
		return false
	}
	g.configs[rootID] = cfg
	// Every counter exists from the start, so dashboards see zeros
	// rather than gaps.
	h.DefineCounter(contract.MetricAllowed)
	for _, r := range contract.Reasons() {
		h.DefineCounter(contract.MetricDeniedPrefix + r)
	}
	h.Log(LevelInfo, "configured: "+cfg.Summary())
	return true
}

// ContextCreate records which plugin a stream belongs to.
func (g *HTTP) ContextCreate(id, parentID uint32) {
	if parentID != 0 {
		g.streams[id] = parentID
	}
}

// Delete forgets a stream or a plugin; a stream gives back what it held
// of its identity's quota.
func (g *HTTP) Delete(h Host, id uint32) {
	g.quota.Release(h, id)
	delete(g.streams, id)
	delete(g.configs, id)
}

// Holds reports whether stream id holds anything Delete must give back:
// a stream that holds nothing may be deleted as soon as it is decided.
func (g *HTTP) Holds(id uint32) bool { return g.quota.holds(id) }

// Refresh says the streams this gate counts are still alive (see
// AliveTimeout); its host calls it at least every AliveRefresh.
func (g *HTTP) Refresh(h Host, now time.Time) { g.quota.Refresh(h, now) }

// RequestHeaders checks the handshake of stream id: it either rewrites the
// request (token stripped, verified identity set) and lets it on, or
// answers it locally.
func (g *HTTP) RequestHeaders(h HTTPHost, id uint32, now time.Time) Action {
	cfg := g.configs[g.streams[id]]
	if cfg == nil {
		return reject(h, auth.NotConfigured(), contract.DefaultRealm)
	}
	pairs, err := h.RequestHeaders()
	if err != nil {
		h.Log(LevelError, "reading the request headers: "+err.Error())
		return reject(h, auth.Internal(), contract.DefaultRealm)
	}
	header := headerLookup(pairs)
	tracer, traced := h.(Tracer)
	if traced {
		header = traceReads(header, tracer)
	}
	route := routeName(h)
	if !clientAllowed(h, cfg.Clients(route)) {
		return reject(h, auth.Denial(contract.ReasonClientAddress), contract.DefaultRealm)
	}
	// The path is left for the check to read: only a policy with a query
	// token source needs it.
	req := auth.Request{Header: header}
	var d auth.Decision
	var policy *auth.Policy
	if name, tagged := h.RoutePolicy(); tagged && route != "" {
		d, policy = cfg.CheckTagged(name, req, now)
	} else {
		d, policy = cfg.Check(route, req, now)
	}
	countCache(h, d)
	if !d.Allow {
		realm := contract.DefaultRealm
		if policy != nil {
			realm = policy.Realm
			h.Log(LevelDebug, "policy "+policy.Name+" denied a handshake on route "+strconv.Quote(route)+": "+d.Reason)
		}
		return reject(h, d, realm)
	}
	edited, err := apply(h, header, d)
	if err == nil && edited && route != "" && route != auth.UnnamedRoute {
		// Envoy clears its route cache when a Wasm filter edits request
		// headers, and the router matches the request again (the native
		// build keeps the route, but a later filter may clear it). It must land
		// on the route whose policy was just checked: the routes the
		// control plane makes accept only a marker naming them, and a
		// request no route accepts is answered 500 route_changed. (Policy
		// validation also refuses route matchers on the headers the filter
		// edits.) Envoy does not tell a Wasm filter the route it matched
		// again, so the check cannot be made here.
		err = h.ReplaceRequestHeader(contract.RouteMarkerHeader, route)
	}
	if err != nil {
		// The token may still be on the request: it must not go upstream.
		h.Log(LevelError, err.Error())
		return reject(h, auth.Internal(), contract.DefaultRealm)
	}
	if reason := g.quota.Admit(h, id, policy, d.Identity, now); reason != "" {
		return reject(h, auth.Denial(reason), policy.Realm)
	}
	if policy != nil {
		h.Count(contract.MetricAllowed)
	}
	if traced {
		tracer.Allowed(d, policy)
	}
	return Continue
}

// Tracer is what a host implements to learn what a handshake's check
// read and decided: every request header it looked up (its value as the
// check saw it, or its absence) and, for a request it lets on, the
// decision. The native binding keys the verdicts it replays without Go
// on exactly those reads.
type Tracer interface {
	HeaderRead(name, value string, present bool)
	Allowed(d auth.Decision, p *auth.Policy)
}

// traceReads reports every lookup of header to t.
func traceReads(header func(string) (string, bool), t Tracer) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := header(name)
		t.HeaderRead(name, v, ok)
		return v, ok
	}
}

// clientAllowed checks the client's address against a route's lists; a
// route without lists costs no host call. An address the host cannot give
// is refused: the list could not be checked.
func clientAllowed(h Host, l *auth.ClientList) bool {
	if l == nil {
		return true
	}
	addr, err := h.ClientAddress()
	if err != nil {
		h.Log(LevelWarn, "reading the client address: "+err.Error())
		return false
	}
	if l.Allows(addr) {
		return true
	}
	h.Log(LevelDebug, "client address "+strconv.Quote(addr)+" refused")
	return false
}

// routeName reads the name of the route Envoy matched; the control plane
// keys auth policies by it. No route matched reads as "", and a route
// without a name must not pass as that.
func routeName(h HTTPHost) string {
	name, ok := h.RouteName()
	switch {
	case !ok:
		return ""
	case name == "":
		return auth.UnnamedRoute
	}
	return name
}

// apply strips the token and any client copy of the identity headers, then
// sets the verified ones; it reports whether it changed the request. A
// header that is absent is not removed: every edit makes Envoy match the
// route again, which a public request without spoofed headers need not
// pay for.
func apply(h HTTPHost, header func(string) (string, bool), d auth.Decision) (bool, error) {
	edited := false
	for _, name := range d.Remove {
		if _, present := header(name); !present {
			continue
		}
		if err := h.RemoveRequestHeader(name); err != nil {
			return edited, err
		}
		edited = true
	}
	if d.Path != "" {
		if err := h.ReplaceRequestHeader(":path", d.Path); err != nil {
			return edited, err
		}
		edited = true
	}
	for _, kv := range d.Set {
		if err := h.ReplaceRequestHeader(kv[0], kv[1]); err != nil {
			return edited, err
		}
		edited = true
	}
	return edited, nil
}

// headerLookup reads a header from the request's pairs as RFC 9110 §5.3
// reads a repeated field: every value, in order, joined with ", ". The
// tcp module reads a raw head the same way (httphead.Head.Get), so both
// modes see the same list.
func headerLookup(pairs [][2]string) func(name string) (string, bool) {
	return func(name string) (string, bool) {
		var vals []string
		for _, kv := range pairs {
			if strings.EqualFold(kv[0], name) {
				vals = append(vals, kv[1])
			}
		}
		return strings.Join(vals, ", "), len(vals) > 0
	}
}

// reject answers locally; the reason is in the body and the details, the
// token is in neither.
func reject(h HTTPHost, d auth.Decision, realm string) Action {
	headers := [][2]string{{"content-type", "application/json"}}
	if d.Challenges() {
		headers = append(headers, [2]string{"www-authenticate", d.WWWAuthenticate(realm)})
	}
	if contract.RetryAfter(d.Reason) {
		headers = append(headers, [2]string{"retry-after", strconv.Itoa(contract.RetryAfterSeconds)})
	}
	if err := h.SendLocalResponse(d.Status, contract.LocalReplyDetailPrefix+d.Reason, d.Body(), headers); err != nil {
		h.Log(LevelError, err.Error())
	}
	h.Count(contract.MetricDeniedPrefix + d.Reason)
	return Pause
}

// parseConfig reads and parses a plugin's configuration, logging why it
// cannot.
func parseConfig(h Host) (*auth.Config, bool) {
	data, err := h.PluginConfiguration()
	if err != nil {
		h.Log(LevelError, err.Error())
		return nil, false
	}
	cfg, err := auth.ParseConfig(data)
	if err != nil {
		h.Log(LevelError, err.Error())
		return nil, false
	}
	// RS* and ES* signatures go to the host's crypto, which is native;
	// the counters say how often it answered and how often the module
	// had to check a signature itself.
	cfg.UseHostVerifier(func(hash string, spki, sig, signed []byte) (bool, error) {
		ok, err := h.VerifySignature(hash, spki, sig, signed)
		if err != nil {
			h.Count(contract.MetricHostVerifyUnavailable)
			return false, err
		}
		h.Count(contract.MetricHostVerified)
		return ok, nil
	})
	return cfg, true
}
