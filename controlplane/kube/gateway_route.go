package kube

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// ruleProblem is why a route cannot be served, as a condition reason.
type ruleProblem struct {
	reason gatewayv1.RouteConditionReason
	msg    string
}

// httpRoute attaches an HTTPRoute to the listeners of our Gateways it
// names and adds its rules as policy routes.
func (g *gatewayBuild) httpRoute(order int, r *gatewayv1.HTTPRoute, endpoints EndpointsFunc) {
	var parents []gatewayv1.RouteParentStatus
	type attachment struct {
		envoy string
		hosts []string
		all   bool // no hostname restriction
		gw    string
	}
	var attach []attachment
	for _, ref := range r.Spec.ParentRefs {
		if (ref.Group != nil && *ref.Group != gatewayv1.GroupName) || (ref.Kind != nil && *ref.Kind != "Gateway") {
			continue
		}
		if ref.Namespace != nil && string(*ref.Namespace) != r.Namespace {
			continue // a Gateway elsewhere is not watched, so not ours
		}
		ls, ours := g.byGateway[string(ref.Name)]
		if !ours {
			continue
		}
		found, allowed := false, false
		var hostsOK bool
		for _, l := range ls {
			if ref.SectionName != nil && *ref.SectionName != l.spec.Name || ref.Port != nil && *ref.Port != l.spec.Port {
				continue
			}
			found = true
			if !l.accepted || !l.allows {
				continue
			}
			allowed = true
			// Attached by allowedRoutes and parentRefs alone, as the
			// spec counts attachedRoutes, hostnames or not.
			l.attached++
			hosts, all, ok := intersectHosts(l.spec.Hostname, r.Spec.Hostnames)
			if !ok {
				continue
			}
			hostsOK = true
			// Listeners sharing a port share a policy listener: one set
			// of routes there, answering the union of their hostnames.
			i := slices.IndexFunc(attach, func(a attachment) bool { return a.envoy == l.envoy })
			if i < 0 {
				attach = append(attach, attachment{envoy: l.envoy, hosts: hosts, all: all, gw: string(ref.Name)})
				continue
			}
			attach[i].all = attach[i].all || all
			attach[i].hosts = slices.Compact(slices.Sorted(slices.Values(append(attach[i].hosts, hosts...))))
		}
		accepted := condition(gatewayv1.RouteConditionAccepted, true, gatewayv1.RouteReasonAccepted, "accepted", r.Generation)
		switch {
		case !found:
			accepted = condition(gatewayv1.RouteConditionAccepted, false, gatewayv1.RouteReasonNoMatchingParent, "no listener of the Gateway matches sectionName and port", r.Generation)
		case !allowed:
			accepted = condition(gatewayv1.RouteConditionAccepted, false, gatewayv1.RouteReasonNotAllowedByListeners, "no listener of the Gateway admits this HTTPRoute", r.Generation)
		case !hostsOK:
			accepted = condition(gatewayv1.RouteConditionAccepted, false, gatewayv1.RouteReasonNoMatchingListenerHostname, "no listener hostname matches the route's hostnames", r.Generation)
		}
		parents = append(parents, gatewayv1.RouteParentStatus{ParentRef: ref, ControllerName: ControllerName, Conditions: []metav1.Condition{accepted}})
	}
	if len(parents) == 0 {
		// No longer on a Gateway of ours: clear what was written before.
		for _, p := range r.Status.Parents {
			if p.ControllerName == ControllerName {
				g.res.Routes = append(g.res.Routes, r)
				g.res.Parents[r.Name] = nil
				break
			}
		}
		return
	}
	g.res.Routes = append(g.res.Routes, r)
	rules, problem, unresolved := g.rules(r, endpoints)
	resolved := condition(gatewayv1.RouteConditionResolvedRefs, true, gatewayv1.RouteReasonResolvedRefs, "resolved", r.Generation)
	if unresolved != nil {
		resolved = condition(gatewayv1.RouteConditionResolvedRefs, false, unresolved.reason, unresolved.msg, r.Generation)
	}
	for i := range parents {
		if problem != nil && parents[i].Conditions[0].Status == metav1.ConditionTrue {
			parents[i].Conditions[0] = condition(gatewayv1.RouteConditionAccepted, false, problem.reason, problem.msg, r.Generation)
		}
		parents[i].Conditions = append(parents[i].Conditions, resolved)
	}
	g.res.Parents[r.Name] = parents
	if problem != nil {
		return
	}
	for _, a := range attach {
		for _, rr := range rules {
			pr := cloneRoute(rr.route)
			pr.Name = shortName("hr", r.Name, pr.Name, a.envoy)
			pr.Listener = a.envoy
			if !a.all {
				if pr.Match == nil {
					pr.Match = &policyv1.RouteMatch{}
				}
				pr.Match.Hosts = a.hosts
			}
			if pr.Kind == policy.KindWebSocket {
				pr.Auth = g.authFor(r.Name, a.gw)
			}
			gr := rr
			gr.route, gr.order, gr.owner = pr, order, Key("HTTPRoute", r.Name)
			g.routes = append(g.routes, gr)
		}
	}
}

// authFor is the handshake policy of a route: the one attached to the
// HTTPRoute, else the one attached to its Gateway.
func (g *gatewayBuild) authFor(route, gateway string) string {
	if a, ok := g.auth[policyTarget{"HTTPRoute", route}]; ok {
		return a
	}
	return g.auth[policyTarget{"Gateway", gateway}]
}

// rules converts an HTTPRoute's rules: one policy route per match. A
// problem refuses the whole route (nothing of it is served); unresolved
// back ends are reported but the rule is still served, its requests
// answered 503 by Envoy for want of an endpoint.
func (g *gatewayBuild) rules(r *gatewayv1.HTTPRoute, endpoints EndpointsFunc) ([]gatewayRoute, *ruleProblem, *ruleProblem) {
	var out []gatewayRoute
	var unresolved *ruleProblem
	for i, rule := range r.Spec.Rules {
		where := fmt.Sprintf("rules[%d]", i)
		if rule.Timeouts != nil || rule.Retry != nil || rule.SessionPersistence != nil {
			return nil, &ruleProblem{gatewayv1.RouteReasonUnsupportedValue, where + ": timeouts, retry and sessionPersistence are not supported"}, nil
		}
		var redirect *gatewayv1.HTTPRequestRedirectFilter
		for k, f := range rule.Filters {
			switch f.Type {
			case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier, gatewayv1.HTTPRouteFilterURLRewrite:
			case gatewayv1.HTTPRouteFilterRequestRedirect:
				redirect = f.RequestRedirect
			default:
				return nil, &ruleProblem{gatewayv1.RouteReasonIncompatibleFilters, fmt.Sprintf("%s.filters[%d]: %s is not supported", where, k, f.Type)}, nil
			}
		}
		var base *policyv1.Route
		if redirect != nil {
			// A redirect answers by itself: its back ends, if any, are
			// never used, so not resolved either.
			rd, p := convertRedirect(redirect, where)
			if p != nil {
				return nil, p, nil
			}
			base = &policyv1.Route{Kind: policy.KindHTTP, Redirect: rd}
		} else {
			backends, kind, p, u := g.backendRefs(r, rule.BackendRefs, where, endpoints)
			if p != nil {
				return nil, p, nil
			}
			if unresolved == nil {
				unresolved = u
			}
			if len(backends) == 0 {
				continue // refused back ends only: no route for this rule
			}
			base = &policyv1.Route{Kind: kind}
			if len(backends) == 1 {
				base.Backend = backends[0].GetName()
			} else {
				base.Backends = backends
			}
		}
		if p := applyFilters(base, rule.Filters, where); p != nil {
			return nil, p, nil
		}
		matches := rule.Matches
		if len(matches) == 0 {
			matches = []gatewayv1.HTTPRouteMatch{{}}
		}
		for j, m := range matches {
			pr := cloneRoute(base)
			pr.Name = fmt.Sprintf("r%d-m%d", i, j)
			gr, p := convertMatch(pr, m, fmt.Sprintf("%s.matches[%d]", where, j))
			if p != nil {
				return nil, p, nil
			}
			if (base.Rewrite.GetPrefix() != "" || base.Redirect.GetPrefix() != "") && pr.Match.GetPrefix() == "" {
				return nil, &ruleProblem{gatewayv1.RouteReasonUnsupportedValue, where + ": ReplacePrefixMatch needs a PathPrefix match"}, nil
			}
			out = append(out, gr)
		}
	}
	return out, nil, unresolved
}

// backendRefs resolves a rule's back ends to policy back ends (one per
// Service port) and decides the rule's kind: websocket when every port
// is a WebSocket one, http when none is.
func (g *gatewayBuild) backendRefs(r *gatewayv1.HTTPRoute, refs []gatewayv1.HTTPBackendRef, where string, endpoints EndpointsFunc) ([]*policyv1.WeightedBackend, string, *ruleProblem, *ruleProblem) {
	var out []*policyv1.WeightedBackend
	var unresolved *ruleProblem
	ws, plain := 0, 0
	for k, ref := range refs {
		at := fmt.Sprintf("%s.backendRefs[%d]", where, k)
		if len(ref.Filters) > 0 {
			return nil, "", &ruleProblem{gatewayv1.RouteReasonIncompatibleFilters, at + ": back end filters are not supported"}, nil
		}
		o := ref.BackendObjectReference
		fail := func(reason gatewayv1.RouteConditionReason, msg string) {
			if unresolved == nil {
				unresolved = &ruleProblem{reason, at + ": " + msg}
			}
		}
		switch {
		case o.Group != nil && *o.Group != "" || o.Kind != nil && *o.Kind != "Service":
			fail(gatewayv1.RouteReasonInvalidKind, "only core Services are supported as back ends")
			continue
		case o.Namespace != nil && string(*o.Namespace) != r.Namespace && !granted(g.in.Grants, r.Namespace, string(*o.Namespace), string(o.Name)):
			fail(gatewayv1.RouteReasonRefNotPermitted, fmt.Sprintf("no ReferenceGrant in namespace %q lets HTTPRoutes of %q use Service %q", *o.Namespace, r.Namespace, o.Name))
			continue
		case o.Port == nil:
			fail(gatewayv1.RouteReasonUnsupportedValue, "a Service back end needs a port")
			continue
		}
		weight := uint32(1)
		if ref.Weight != nil {
			weight = uint32(max(*ref.Weight, 0))
		}
		ns := r.Namespace
		name := shortName("svc", string(o.Name), strconv.Itoa(int(*o.Port)))
		if o.Namespace != nil && string(*o.Namespace) != ns {
			ns = string(*o.Namespace)
			name = shortName("svc", ns, string(o.Name), strconv.Itoa(int(*o.Port)))
		}
		svc, ok := g.in.Service(ns, string(o.Name))
		var port *corev1.ServicePort
		if ok {
			for i := range svc.Spec.Ports {
				if svc.Spec.Ports[i].Port == int32(*o.Port) {
					port = &svc.Spec.Ports[i]
				}
			}
		}
		switch {
		case !ok:
			fail(gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("no Service named %q in namespace %q", o.Name, ns))
		case port == nil:
			fail(gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("Service %q has no port %d", o.Name, *o.Port))
		case port.AppProtocol != nil && *port.AppProtocol == WebSocketAppProtocol:
			ws++
		default:
			plain++
		}
		if _, seen := g.backends[name]; !seen {
			b := &policyv1.Backend{Name: name, Discovered: true}
			if port != nil {
				eps := endpoints(ServiceRef{Name: string(o.Name), Namespace: ns, Port: int32(*o.Port)})
				b.Endpoints = append(append([]string{}, eps.Ready...), eps.Draining...)
				b.DrainingEndpoints = eps.Draining
			}
			g.backends[name] = b
			g.backendOwner[name] = Key("HTTPRoute", r.Name)
		}
		if weight > 0 {
			out = append(out, &policyv1.WeightedBackend{Name: name, Weight: weight})
		}
	}
	switch {
	case ws > 0 && plain > 0:
		return nil, "", &ruleProblem{gatewayv1.RouteReasonUnsupportedValue, where + ": back ends mix WebSocket (appProtocol " + WebSocketAppProtocol + ") and other ports"}, nil
	case len(out) == 0 && unresolved != nil && unresolved.reason != gatewayv1.RouteReasonBackendNotFound:
		// Every back end was refused (not permitted, not a Service): the
		// rule is not served, and ResolvedRefs says why.
		return nil, "", nil, unresolved
	case len(out) == 0:
		return nil, "", &ruleProblem{gatewayv1.RouteReasonUnsupportedValue, where + ": no back end with a weight above zero"}, nil
	case ws > 0:
		return out, policy.KindWebSocket, nil, unresolved
	}
	return out, policy.KindHTTP, nil, unresolved
}

// applyFilters maps the filters directpipe's routes carry; any other
// refuses the route.
func applyFilters(pr *policyv1.Route, filters []gatewayv1.HTTPRouteFilter, where string) *ruleProblem {
	for i, f := range filters {
		at := fmt.Sprintf("%s.filters[%d]", where, i)
		refuse := func(why string) *ruleProblem {
			return &ruleProblem{gatewayv1.RouteReasonIncompatibleFilters, at + ": " + why}
		}
		if pr.Redirect != nil && (f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier || f.Type == gatewayv1.HTTPRouteFilterURLRewrite) {
			return refuse(string(f.Type) + " with RequestRedirect: a redirect forwards nothing")
		}
		switch f.Type {
		case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier:
			if pr.Kind != policy.KindHTTP {
				return refuse(string(f.Type) + " is for REST rules: the direct path forwards the handshake unchanged")
			}
			m := f.RequestHeaderModifier
			if f.Type == gatewayv1.HTTPRouteFilterResponseHeaderModifier {
				m = f.ResponseHeaderModifier
			}
			if m == nil {
				return refuse(string(f.Type) + " without its settings")
			}
			if len(m.Add) > 0 {
				return refuse("add (appending a header value) is not supported; set replaces it")
			}
			var set []*policyv1.HeaderValue
			for _, h := range m.Set {
				set = append(set, &policyv1.HeaderValue{Name: strings.ToLower(string(h.Name)), Value: h.Value})
			}
			remove := make([]string, 0, len(m.Remove))
			for _, h := range m.Remove {
				remove = append(remove, strings.ToLower(h))
			}
			if f.Type == gatewayv1.HTTPRouteFilterRequestHeaderModifier {
				pr.RequestHeadersToAdd, pr.RequestHeadersToRemove = append(pr.RequestHeadersToAdd, set...), append(pr.RequestHeadersToRemove, remove...)
			} else {
				pr.ResponseHeadersToAdd, pr.ResponseHeadersToRemove = append(pr.ResponseHeadersToAdd, set...), append(pr.ResponseHeadersToRemove, remove...)
			}
		case gatewayv1.HTTPRouteFilterURLRewrite:
			u := f.URLRewrite
			if u == nil || u.Hostname != nil || u.Path == nil {
				return refuse("URLRewrite supports a path rewrite only")
			}
			switch {
			case u.Path.Type == gatewayv1.FullPathHTTPPathModifier && u.Path.ReplaceFullPath != nil:
				pr.Rewrite = &policyv1.PathRewrite{Path: *u.Path.ReplaceFullPath}
			case u.Path.Type == gatewayv1.PrefixMatchHTTPPathModifier && u.Path.ReplacePrefixMatch != nil:
				pr.Rewrite = &policyv1.PathRewrite{Prefix: *u.Path.ReplacePrefixMatch}
			default:
				return refuse("URLRewrite path without its value")
			}
		}
	}
	return nil
}

// convertRedirect maps a RequestRedirect filter. Without a port, the
// Gateway API derives one from the scheme (80 for http, 443 for https)
// and asks that the Location then name none: the translation leaves a
// scheme's default port out of the Location, and names it only for a
// request whose Host names another port, which must be replaced.
func convertRedirect(f *gatewayv1.HTTPRequestRedirectFilter, where string) (*policyv1.RequestRedirect, *ruleProblem) {
	unsupported := func(msg string) (*policyv1.RequestRedirect, *ruleProblem) {
		return nil, &ruleProblem{gatewayv1.RouteReasonUnsupportedValue, where + ": RequestRedirect " + msg}
	}
	if f == nil {
		return unsupported("without its settings")
	}
	rd := &policyv1.RequestRedirect{}
	if f.Scheme != nil {
		rd.Scheme = strings.ToLower(*f.Scheme)
		switch rd.Scheme {
		case "http":
			rd.Port = 80
		case "https":
			rd.Port = 443
		default:
			return unsupported(fmt.Sprintf("scheme %q: http or https", *f.Scheme))
		}
	}
	if f.Hostname != nil {
		rd.Host = strings.ToLower(string(*f.Hostname))
		rd.Port = 0
	}
	if f.Port != nil {
		rd.Port = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		rd.StatusCode = uint32(*f.StatusCode)
		if rd.StatusCode != 301 && rd.StatusCode != 302 && rd.StatusCode != 303 && rd.StatusCode != 307 && rd.StatusCode != 308 {
			return unsupported(fmt.Sprintf("statusCode %d: 301, 302, 303, 307 or 308", rd.StatusCode))
		}
	}
	if p := f.Path; p != nil {
		switch {
		case p.Type == gatewayv1.FullPathHTTPPathModifier && p.ReplaceFullPath != nil:
			rd.Path = *p.ReplaceFullPath
		case p.Type == gatewayv1.PrefixMatchHTTPPathModifier && p.ReplacePrefixMatch != nil:
			rd.Prefix = *p.ReplacePrefixMatch
		default:
			return unsupported("path without its value")
		}
	}
	return rd, nil
}

// convertMatch sets a policy route's match from an HTTPRoute match.
func convertMatch(pr *policyv1.Route, m gatewayv1.HTTPRouteMatch, where string) (gatewayRoute, *ruleProblem) {
	unsupported := func(msg string) (gatewayRoute, *ruleProblem) {
		return gatewayRoute{}, &ruleProblem{gatewayv1.RouteReasonUnsupportedValue, where + ": " + msg}
	}
	if len(m.QueryParams) > 0 || m.Method != nil {
		return unsupported("query parameter and method matches are not supported")
	}
	pm := &policyv1.RouteMatch{Prefix: "/"}
	gr := gatewayRoute{route: pr, length: 1}
	if p := m.Path; p != nil {
		value := "/"
		if p.Value != nil {
			value = *p.Value
		}
		typ := gatewayv1.PathMatchPathPrefix
		if p.Type != nil {
			typ = *p.Type
		}
		switch typ {
		case gatewayv1.PathMatchExact:
			pm = &policyv1.RouteMatch{Path: value}
			gr.exact = true
		case gatewayv1.PathMatchPathPrefix:
			pm = &policyv1.RouteMatch{Prefix: value}
		default:
			return unsupported(fmt.Sprintf("path match type %s is not supported", typ))
		}
		gr.length = len(value)
	}
	for _, h := range m.Headers {
		if h.Type != nil && *h.Type != gatewayv1.HeaderMatchExact {
			return unsupported(fmt.Sprintf("header match type %s is not supported", *h.Type))
		}
		pm.Headers = append(pm.Headers, &policyv1.HeaderMatch{Name: strings.ToLower(string(h.Name)), Exact: h.Value})
	}
	gr.headers = len(m.Headers)
	pr.Match = pm
	return gr, nil
}

// intersectHosts is the host names a route answers on a listener: all
// (no restriction), or the intersection of the listener's hostname and
// the route's; ok is false when they have none in common.
func intersectHosts(listener *gatewayv1.Hostname, route []gatewayv1.Hostname) (hosts []string, all, ok bool) {
	if listener == nil || *listener == "" {
		if len(route) == 0 {
			return nil, true, true
		}
		for _, h := range route {
			hosts = append(hosts, strings.ToLower(string(h)))
		}
		return hosts, false, true
	}
	l := strings.ToLower(string(*listener))
	if len(route) == 0 {
		return []string{l}, false, true
	}
	for _, h := range route {
		r := strings.ToLower(string(h))
		switch {
		case r == l, hostCovers(l, r):
			hosts = append(hosts, r)
		case hostCovers(r, l):
			hosts = append(hosts, l)
		}
	}
	slices.Sort(hosts)
	hosts = slices.Compact(hosts)
	return hosts, false, len(hosts) > 0
}

// hostCovers says whether the wildcard pattern ("*.example.com") matches
// host, which may itself be a narrower wildcard.
func hostCovers(pattern, host string) bool {
	suffix, ok := strings.CutPrefix(pattern, "*")
	if !ok {
		return false
	}
	return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
}

// granted says whether a ReferenceGrant in namespace to lets HTTPRoutes
// of namespace from use the Service named svc.
func granted(grants []gatewayv1.ReferenceGrant, from, to, svc string) bool {
	for i := range grants {
		rg := &grants[i]
		if rg.Namespace != to {
			continue
		}
		fromOK := slices.ContainsFunc(rg.Spec.From, func(f gatewayv1.ReferenceGrantFrom) bool {
			return f.Group == gatewayv1.GroupName && f.Kind == "HTTPRoute" && string(f.Namespace) == from
		})
		toOK := slices.ContainsFunc(rg.Spec.To, func(t gatewayv1.ReferenceGrantTo) bool {
			return t.Group == "" && t.Kind == "Service" && (t.Name == nil || *t.Name == "" || string(*t.Name) == svc)
		})
		if fromOK && toOK {
			return true
		}
	}
	return false
}
