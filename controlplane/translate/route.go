package translate

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	mutationrulesv3 "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	headermutationv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/header_mutation/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/filter/contract"
)

// DefaultWebSocketIdleTimeout closes a voice stream that has carried nothing
// for this long when the policy does not say otherwise.
const DefaultWebSocketIdleTimeout = 5 * time.Minute

// UpgradeRequiredSuffix names the companion route that answers a plain HTTP
// request on a WebSocket path.
const UpgradeRequiredSuffix = ".upgrade-required"

// NamedPortSuffix names the companion route of a redirect that changes
// the scheme and keeps the host: it answers the requests whose Host names
// a port (see namedPortRedirect).
const NamedPortSuffix = ".named-port"

// routeConfig builds the route table of one listener. Routes are grouped
// into virtual hosts by their host set, in order of first appearance, with
// the catch-all host last; inside a virtual host they keep policy order,
// since Envoy matches first to last and the order is the operator's.
func routeConfig(l *policyv1.Listener, routes []*policyv1.Route, backends map[string]*policyv1.Backend) *routev3.RouteConfiguration {
	listener := l.GetName()
	var hosts []*routev3.VirtualHost
	byKey := map[string]*routev3.VirtualHost{}
	catchAll := &routev3.VirtualHost{Name: listener, Domains: []string{"*"}}
	for _, r := range routes {
		vh := catchAll
		if domains := r.GetMatch().GetHosts(); len(domains) > 0 {
			sorted := slices.Sorted(slices.Values(domains))
			key := strings.Join(sorted, ",")
			if vh = byKey[key]; vh == nil {
				vh = &routev3.VirtualHost{Name: listener + "/" + key, Domains: sorted}
				byKey[key] = vh
				hosts = append(hosts, vh)
			}
		}
		b := backends[r.GetBackend()]
		switch r.GetKind() {
		case policy.KindWebSocket:
			vh.Routes = append(vh.Routes, tagAuth(webSocketRoute(r, b), r.GetAuth()), upgradeRequiredRoute(r))
		case policy.KindHTTP:
			if nr := namedPortRedirect(r); nr != nil {
				vh.Routes = append(vh.Routes, tagAuth(nr, r.GetAuth()))
			}
			vh.Routes = append(vh.Routes, tagAuth(httpRoute(r, b), r.GetAuth()))
		}
	}
	if len(catchAll.Routes) > 0 || len(hosts) == 0 {
		hosts = append(hosts, catchAll)
	}
	for _, vh := range hosts {
		for _, r := range vh.Routes {
			pinToMarker(r)
		}
		vh.Routes = append(vh.Routes, routeChangedRoute())
	}
	rc := &routev3.RouteConfiguration{Name: listener, VirtualHosts: hosts}
	if l.GetLimits().GetTrustedProxyHops() == 0 {
		// Envoy is the edge: it appends the client's address to
		// X-Forwarded-For but keeps what the client wrote before it. A back
		// end reading the first entry would believe the client; it gets
		// the connection's address alone. The other forwarding headers
		// only a proxy in front may write, and there is none.
		rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "x-forwarded-for", Value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}}
		rc.RequestHeadersToRemove = []string{"forwarded", "x-forwarded-host", "x-forwarded-port", "x-real-ip"}
	}
	return rc
}

// tagAuth names the route's auth policy in its metadata, where the
// handshake filter reads it: a route and its auth setting reach Envoy in
// the same RDS update, so the filter never sees a route whose setting has
// not arrived, and adding or changing routes leaves the filter's
// configuration (ECDS) alone. A public route carries no tag: metadata
// costs Envoy about 10 µs per route to load, a third of a large route
// table's time, and the filter treats an untagged route as public.
func tagAuth(r *routev3.Route, authPolicy string) *routev3.Route {
	if authPolicy == "" {
		return r
	}
	r.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		contract.RouteMetadataNamespace: {Fields: map[string]*structpb.Value{
			contract.RouteMetadataPolicy: structpb.NewStringValue(authPolicy),
		}},
	}}
	return r
}

// pinToMarker makes a route match only a request whose route marker is
// absent (Envoy's first match, before the handshake filter) or names it
// (the match Envoy makes again after the filter edited the request), and
// keeps the marker from the back end.
func pinToMarker(r *routev3.Route) {
	r.Match.Headers = append(r.Match.Headers, &routev3.HeaderMatcher{
		Name:                      contract.RouteMarkerHeader,
		TreatMissingHeaderAsEmpty: true,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
				Regex: "|" + regexp.QuoteMeta(r.GetName()),
			}},
		}},
	})
	r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, contract.RouteMarkerHeader)
}

// routeChangedRoute ends every virtual host: a request whose marker no
// route accepts had its route change under the handshake filter's edits,
// and must not go to a route whose policy never ran.
func routeChangedRoute() *routev3.Route {
	return &routev3.Route{
		Name: contract.RouteChangedRoute,
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{
				Name:                 contract.RouteMarkerHeader,
				HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
			}},
		},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: uint32(contract.Status(contract.ReasonRouteChanged)),
			Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
				InlineString: string(contract.Body(contract.ReasonRouteChanged)),
			}},
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}},
		},
	}
}

func pathMatch(r *policyv1.Route) *routev3.RouteMatch {
	m := &routev3.RouteMatch{}
	if p := r.GetMatch().GetPath(); p != "" {
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: p}
	} else {
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: r.GetMatch().GetPrefix()}
	}
	for _, h := range r.GetMatch().GetHeaders() {
		hm := &routev3.HeaderMatcher{Name: h.GetName()}
		switch {
		case h.GetExact() != "":
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: h.GetExact()},
			}}
		case h.GetPrefix() != "":
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: h.GetPrefix()},
			}}
		default:
			hm.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		}
		m.Headers = append(m.Headers, hm)
	}
	return m
}

// routeAction holds what every proxied route shares: its cluster, limits
// and session affinity.
func routeAction(r *policyv1.Route, b *policyv1.Backend) *routev3.RouteAction {
	a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: routeCluster(r)}}
	if split := r.GetBackends(); len(split) > 0 {
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: weightedClusters(split)}
	}
	switch rw := r.GetRewrite(); {
	case rw.GetPrefix() != "":
		a.PrefixRewrite = rw.GetPrefix()
	case rw.GetPath() != "":
		// The whole path, whatever matched; Envoy keeps the query.
		a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: "^.*$"},
			Substitution: rw.GetPath(),
		}
	}
	if d := r.GetMaxStreamDuration(); d != nil {
		a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: clone(d)}
	}
	if b.GetLb() == policy.LBRingHash {
		a.HashPolicy = []*routev3.RouteAction_HashPolicy{{
			PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{
				HeaderName: b.GetHashHeader(),
			}},
		}}
	}
	return a
}

// weightedClusters splits new requests across back ends by weight. The
// pick happens once per request, so a WebSocket stays on the back end it
// started on for its whole life, and a weight change moves only new
// streams. A back end of weight 0 is left out: Envoy then sends it nothing,
// and a split must list at least one cluster.
func weightedClusters(split []*policyv1.WeightedBackend) *routev3.WeightedCluster {
	wc := &routev3.WeightedCluster{}
	for _, wb := range split {
		if wb.GetWeight() == 0 {
			continue
		}
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
			Name:   wb.GetName(),
			Weight: wrapperspb.UInt32(wb.GetWeight()),
		})
	}
	return wc
}

// webSocketRoute is the direct path. It matches only real upgrades, so that
// a plain request can never reach a voice back end around the handshake
// check. It has no route timeout (a call lasts as long as it lasts), no retry
// policy (a replayed handshake is a new call) and nothing that buffers.
func webSocketRoute(r *policyv1.Route, b *policyv1.Backend) *routev3.Route {
	m := pathMatch(r)
	m.Headers = append(m.Headers, &routev3.HeaderMatcher{
		Name: "upgrade",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "websocket"},
			IgnoreCase:   true,
		}},
	})
	idle := DefaultWebSocketIdleTimeout
	if d := r.GetIdleTimeout(); d != nil {
		idle = d.AsDuration()
	}
	action := routeAction(r, b)
	action.Timeout = durationpb.New(0)
	action.IdleTimeout = durationpb.New(idle)
	action.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{
		UpgradeType: "websocket",
		Enabled:     wrapperspb.Bool(true),
	}}
	return &routev3.Route{Name: r.GetName(), Match: m, Action: &routev3.Route_Route{Route: action}}
}

// upgradeRequiredRoute answers 426 to anything on a WebSocket path that is
// not an upgrade, naming the protocol in Upgrade and Connection as RFC 9110
// (§7.8, §15.5.22) asks. Envoy strips both from any response to a request
// that is not itself an upgrade, so the REST chain's header mutation filter
// first gives this route's request the two headers: the router has already
// picked this route (the filter does not clear the route cache), and the
// request goes nowhere but to this direct response. Over HTTP/2 Envoy drops
// them, as that protocol requires.
func upgradeRequiredRoute(r *policyv1.Route) *routev3.Route {
	set := func(name, value string) *mutationrulesv3.HeaderMutation {
		return &mutationrulesv3.HeaderMutation{Action: &mutationrulesv3.HeaderMutation_Append{Append: &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: name, Value: value},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}}}
	}
	return &routev3.Route{
		TypedPerFilterConfig: map[string]*anypb.Any{
			HeaderMutationFilterName: mustAny(&headermutationv3.HeaderMutationPerRoute{Mutations: &headermutationv3.Mutations{
				RequestMutations: []*mutationrulesv3.HeaderMutation{set("upgrade", "websocket"), set("connection", "upgrade")},
			}}),
		},
		Name:  r.GetName() + UpgradeRequiredSuffix,
		Match: pathMatch(r),
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 426,
			Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{
				InlineString: `{"error":"upgrade_required","message":"this path accepts WebSocket upgrades only"}` + "\n",
			}},
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "upgrade", Value: "websocket"}},
			{Header: &corev3.HeaderValue{Key: "connection", Value: "upgrade"}},
			{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}},
		},
	}
}

// httpRoute is a REST route on the full filter chain; WebSocket upgrades are
// refused on it so that streams cannot sneak onto the request path.
func httpRoute(r *policyv1.Route, b *policyv1.Backend) *routev3.Route {
	if rd := r.GetRedirect(); rd != nil {
		route := &routev3.Route{
			Name:   r.GetName(),
			Match:  pathMatch(r),
			Action: &routev3.Route_Redirect{Redirect: redirectAction(rd)},
		}
		route.ResponseHeadersToAdd = headerValues(r.GetResponseHeadersToAdd())
		route.ResponseHeadersToRemove = slices.Clone(r.GetResponseHeadersToRemove())
		return route
	}
	action := routeAction(r, b)
	action.UpgradeConfigs = []*routev3.RouteAction_UpgradeConfig{{
		UpgradeType: "websocket",
		Enabled:     wrapperspb.Bool(false),
	}}
	if d := r.GetIdleTimeout(); d != nil {
		action.IdleTimeout = clone(d)
	}
	route := &routev3.Route{
		Name:   r.GetName(),
		Match:  pathMatch(r),
		Action: &routev3.Route_Route{Route: action},
	}
	perFilter := map[string]*anypb.Any{}
	if c := r.GetCors(); c != nil {
		perFilter["envoy.filters.http.cors"] = mustAny(corsPolicy(c))
	}
	if rl := r.GetRateLimit(); rl != nil {
		perFilter[RateLimitFilterName] = mustAny(rateLimit(r.GetName(), rl))
	}
	if len(perFilter) > 0 {
		route.TypedPerFilterConfig = perFilter
	}
	route.RequestHeadersToAdd = headerValues(r.GetRequestHeadersToAdd())
	route.RequestHeadersToRemove = slices.Clone(r.GetRequestHeadersToRemove())
	route.ResponseHeadersToAdd = headerValues(r.GetResponseHeadersToAdd())
	route.ResponseHeadersToRemove = slices.Clone(r.GetResponseHeadersToRemove())
	return route
}

// redirectCodes map a policy's status code to Envoy's; 0 is 301.
var redirectCodes = map[uint32]routev3.RedirectAction_RedirectResponseCode{
	0:   routev3.RedirectAction_MOVED_PERMANENTLY,
	301: routev3.RedirectAction_MOVED_PERMANENTLY,
	302: routev3.RedirectAction_FOUND,
	303: routev3.RedirectAction_SEE_OTHER,
	307: routev3.RedirectAction_TEMPORARY_REDIRECT,
	308: routev3.RedirectAction_PERMANENT_REDIRECT,
}

// defaultPorts are the ports a Location leaves out for its scheme.
var defaultPorts = map[string]uint32{"http": 80, "https": 443}

// redirectAction is the Location of a redirecting route: the request's
// URL with the parts the policy sets replaced, its query kept. Envoy
// writes any port_redirect into the Location, so a port that is the new
// scheme's default is left out: with a new host the Location then names
// no port, and with the request's host Envoy drops the port of the
// request's scheme (":80" on the way to https); namedPortRedirect sends
// the requests that name another port to the default one.
func redirectAction(rd *policyv1.RequestRedirect) *routev3.RedirectAction {
	a := &routev3.RedirectAction{
		HostRedirect: rd.GetHost(),
		PortRedirect: rd.GetPort(),
		ResponseCode: redirectCodes[rd.GetStatusCode()],
	}
	if s := rd.GetScheme(); s != "" {
		a.SchemeRewriteSpecifier = &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: s}
		if a.PortRedirect == defaultPorts[s] {
			a.PortRedirect = 0
		}
	}
	switch {
	case rd.GetPath() != "":
		a.PathRewriteSpecifier = &routev3.RedirectAction_PathRedirect{PathRedirect: rd.GetPath()}
	case rd.GetPrefix() != "":
		a.PathRewriteSpecifier = &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: rd.GetPrefix()}
	}
	return a
}

// namedPortRedirect is, for a redirect that changes the scheme, keeps the
// request's host and names no other port, the route that answers the
// requests whose Host names a port Envoy would keep: Envoy drops only the
// default port of the request's own scheme, so "example.com:8080" would
// otherwise be sent to https on 8080. Envoy cannot write the host without
// its port, so these are sent to the new scheme's default port by name
// (":443"). nil for every other route.
func namedPortRedirect(r *policyv1.Route) *routev3.Route {
	rd := r.GetRedirect()
	s := rd.GetScheme()
	if s == "" || rd.GetHost() != "" || rd.GetPort() != 0 && rd.GetPort() != defaultPorts[s] {
		return nil
	}
	// The port Envoy drops itself: the other scheme's default.
	dropped := defaultPorts["http"]
	if s == "http" {
		dropped = defaultPorts["https"]
	}
	route := httpRoute(r, nil)
	route.Name = r.GetName() + NamedPortSuffix
	route.GetRedirect().PortRedirect = defaultPorts[s]
	route.Match.Headers = append(route.Match.Headers,
		&routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `.*:[0-9]+`}},
		}}},
		&routev3.HeaderMatcher{Name: ":authority", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ":" + strconv.FormatUint(uint64(dropped), 10)},
		}}},
	)
	return route
}

// headerValues are the headers a REST route sets, replacing any value the
// request or response had. A policy value is literal text: Envoy reads
// "%" as the start of a formatter, so each is doubled.
func headerValues(hs []*policyv1.HeaderValue) []*corev3.HeaderValueOption {
	var out []*corev3.HeaderValueOption
	for _, h := range hs {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: h.GetName(), Value: strings.ReplaceAll(h.GetValue(), "%", "%%")},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return out
}
