package kube

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// ControllerName is the GatewayClass controllerName this store serves.
const ControllerName gatewayv1.GatewayController = "directpipe.io/gateway-controller"

// WebSocketAppProtocol marks a Service port that speaks WebSocket
// (Kubernetes' standard application protocol name): an HTTPRoute rule
// whose back ends are such ports takes the direct path.
const WebSocketAppProtocol = "kubernetes.io/ws"

// GatewayObjects are the Gateway API resources a policy is built from:
// every GatewayClass, and the Gateways and HTTPRoutes of the namespace.
type GatewayObjects struct {
	Classes  []gatewayv1.GatewayClass
	Gateways []gatewayv1.Gateway
	Routes   []gatewayv1.HTTPRoute
	// Service returns a Service of the namespace by name.
	Service func(name string) (*corev1.Service, bool)
	// Host is the address Gateway listeners bind: a listener on port p
	// becomes an Envoy listener on Host:p.
	Host string
}

// GatewayResult is what the conversion made of the Gateway API objects:
// the objects it owns (a class of ours, a Gateway of such a class, an
// HTTPRoute attached to one) and their conditions. Programmed is not in
// it: that depends on whether the policy is served, which the status
// writer learns later.
type GatewayResult struct {
	Classes  []*gatewayv1.GatewayClass
	Gateways []*gatewayv1.Gateway
	Routes   []*gatewayv1.HTTPRoute
	// ClassConditions, by class name.
	ClassConditions map[string][]metav1.Condition
	// GatewayConditions and Listeners, by Gateway name: the Gateway's
	// Accepted condition and each listener's status without Programmed.
	GatewayConditions map[string][]metav1.Condition
	Listeners         map[string][]gatewayv1.ListenerStatus
	// Parents are each HTTPRoute's parent statuses for our Gateways.
	Parents map[string][]gatewayv1.RouteParentStatus
}

// policyTarget is an object a HandshakePolicy may attach to.
type policyTarget struct{ kind, name string }

// gatewayBuild holds the conversion's working state.
type gatewayBuild struct {
	in   *GatewayObjects
	auth map[policyTarget]string // attached handshake policy by target
	res  *GatewayResult

	listeners []*policyv1.Listener
	routes    []gatewayRoute
	backends  map[string]*policyv1.Backend
	// backendOwner is the first HTTPRoute that named each back end.
	backendOwner map[string]string
	taken        map[string]bool // ports already listened on
	// byGateway maps a Gateway's listeners to what the conversion made
	// of them.
	byGateway map[string][]*gatewayListener
}

// gatewayListener is one accepted listener of a Gateway.
type gatewayListener struct {
	spec     gatewayv1.Listener
	envoy    string // the policy listener it is served on
	accepted bool
	allows   bool // HTTPRoutes of this namespace may attach
	attached int32
}

// gatewayRoute is one policy route with the HTTPRoute it came from and
// its place in Gateway API precedence.
type gatewayRoute struct {
	route   *policyv1.Route
	owner   string // Key("HTTPRoute", name)
	order   int    // HTTPRoute order (oldest first), then rule, then match
	exact   bool
	length  int
	headers int
}

// buildGateway converts the Gateway API objects into listeners, routes
// and back ends of a policy, in a deterministic order. taken are the
// ports the deployment's own listeners use.
func buildGateway(in *GatewayObjects, taken []string, policies []*HandshakePolicy, endpoints EndpointsFunc) (*gatewayBuild, map[string][]string) {
	g := &gatewayBuild{
		in: in, auth: map[policyTarget]string{},
		res: &GatewayResult{
			ClassConditions:   map[string][]metav1.Condition{},
			GatewayConditions: map[string][]metav1.Condition{},
			Listeners:         map[string][]gatewayv1.ListenerStatus{},
			Parents:           map[string][]gatewayv1.RouteParentStatus{},
		},
		backends:     map[string]*policyv1.Backend{},
		backendOwner: map[string]string{},
		taken:        map[string]bool{},
		byGateway:    map[string][]*gatewayListener{},
	}
	for _, addr := range taken {
		if _, port, err := net.SplitHostPort(addr); err == nil {
			g.taken[port] = true
		}
	}
	notes := g.attachPolicies(policies)
	classes := g.classes()
	for _, gw := range oldestFirst(in.Gateways, func(o *gatewayv1.Gateway) *metav1.ObjectMeta { return &o.ObjectMeta }) {
		if classes[string(gw.Spec.GatewayClassName)] {
			g.gateway(gw)
		}
	}
	for i, r := range oldestFirst(in.Routes, func(o *gatewayv1.HTTPRoute) *metav1.ObjectMeta { return &o.ObjectMeta }) {
		g.httpRoute(i, r, endpoints)
	}
	for name, ls := range g.byGateway {
		st := g.res.Listeners[name]
		for i, l := range ls {
			st[i].AttachedRoutes = l.attached
		}
	}
	// Gateway API precedence: an exact path before any prefix, a longer
	// prefix first, more header matches first, then the oldest route.
	slices.SortStableFunc(g.routes, func(a, b gatewayRoute) int {
		if a.exact != b.exact {
			if a.exact {
				return -1
			}
			return 1
		}
		return cmp.Or(cmp.Compare(b.length, a.length), cmp.Compare(b.headers, a.headers), cmp.Compare(a.order, b.order))
	})
	return g, notes
}

// attachPolicies finds the handshake policy attached to each Gateway and
// HTTPRoute. Two attached to one object: the oldest wins (then the
// name), as policy attachment resolves conflicts; the other is told.
func (g *gatewayBuild) attachPolicies(policies []*HandshakePolicy) map[string][]string {
	notes := map[string][]string{}
	sorted := slices.Clone(policies)
	slices.SortStableFunc(sorted, func(a, b *HandshakePolicy) int {
		return cmp.Or(a.CreationTimestamp.Compare(b.CreationTimestamp.Time), cmp.Compare(a.Name, b.Name))
	})
	for _, hp := range sorted {
		for _, ref := range hp.Spec.TargetRefs {
			t := policyTarget{ref.Kind, ref.Name}
			if owner, ok := g.auth[t]; ok {
				k := Key("HandshakePolicy", hp.Name)
				notes[k] = append(notes[k], fmt.Sprintf("targetRefs: %s %s already has HandshakePolicy %s attached (the older one wins)", ref.Kind, ref.Name, owner))
				continue
			}
			g.auth[t] = hp.Name
		}
	}
	return notes
}

// classes accepts every GatewayClass naming our controller and returns
// their names.
func (g *gatewayBuild) classes() map[string]bool {
	out := map[string]bool{}
	for i := range g.in.Classes {
		c := &g.in.Classes[i]
		if c.Spec.ControllerName != ControllerName {
			continue
		}
		g.res.Classes = append(g.res.Classes, c)
		cond := condition(gatewayv1.GatewayClassConditionStatusAccepted, true, gatewayv1.GatewayClassReasonAccepted, "served by directpipe", c.Generation)
		if c.Spec.ParametersRef != nil {
			cond = condition(gatewayv1.GatewayClassConditionStatusAccepted, false, gatewayv1.GatewayClassReasonInvalidParameters, "directpipe takes no parameters", c.Generation)
		} else {
			out[c.Name] = true
		}
		g.res.ClassConditions[c.Name] = []metav1.Condition{cond}
	}
	return out
}

// gateway turns a Gateway's listeners into policy listeners, one per
// port: HTTP listeners on one port share it, told apart by hostname.
func (g *gatewayBuild) gateway(gw *gatewayv1.Gateway) {
	g.res.Gateways = append(g.res.Gateways, gw)
	gen := gw.Generation
	var statuses []gatewayv1.ListenerStatus
	var ls []*gatewayListener
	ports := map[gatewayv1.PortNumber]string{} // port → policy listener of this Gateway
	hostnames := map[string]bool{}             // port/hostname already claimed here
	anyAccepted := false
	for _, spec := range gw.Spec.Listeners {
		l := &gatewayListener{spec: spec}
		ls = append(ls, l)
		st := gatewayv1.ListenerStatus{Name: spec.Name, SupportedKinds: []gatewayv1.RouteGroupKind{}}
		kindsOK := true
		if spec.AllowedRoutes != nil && len(spec.AllowedRoutes.Kinds) > 0 {
			kindsOK = false
			for _, k := range spec.AllowedRoutes.Kinds {
				if isHTTPRouteKind(k) {
					kindsOK = true
					st.SupportedKinds = append(st.SupportedKinds, httpRouteKind())
				}
			}
		} else if spec.Protocol == gatewayv1.HTTPProtocolType {
			st.SupportedKinds = append(st.SupportedKinds, httpRouteKind())
		}
		host := ""
		if spec.Hostname != nil {
			host = string(*spec.Hostname)
		}
		portKey := strconv.Itoa(int(spec.Port))
		accepted := condition(gatewayv1.ListenerConditionAccepted, true, gatewayv1.ListenerReasonAccepted, "listening on "+net.JoinHostPort(g.in.Host, portKey), gen)
		conflicted := condition(gatewayv1.ListenerConditionConflicted, false, gatewayv1.ListenerReasonNoConflicts, "no conflicts", gen)
		switch {
		case spec.Protocol != gatewayv1.HTTPProtocolType:
			accepted = condition(gatewayv1.ListenerConditionAccepted, false, gatewayv1.ListenerReasonUnsupportedProtocol, fmt.Sprintf("protocol %s is not supported: directpipe serves HTTP listeners (WebSocket upgrades included)", spec.Protocol), gen)
		case g.taken[portKey] && ports[spec.Port] == "":
			accepted = condition(gatewayv1.ListenerConditionAccepted, false, gatewayv1.ListenerReasonPortUnavailable, fmt.Sprintf("port %d is already served by another listener", spec.Port), gen)
		case hostnames[portKey+"/"+host]:
			accepted = condition(gatewayv1.ListenerConditionAccepted, false, gatewayv1.ListenerReasonHostnameConflict, fmt.Sprintf("another listener on port %d has hostname %q", spec.Port, host), gen)
			conflicted = condition(gatewayv1.ListenerConditionConflicted, true, gatewayv1.ListenerReasonHostnameConflict, accepted.Message, gen)
		}
		resolved := condition(gatewayv1.ListenerConditionResolvedRefs, true, gatewayv1.ListenerReasonResolvedRefs, "resolved", gen)
		if !kindsOK {
			resolved = condition(gatewayv1.ListenerConditionResolvedRefs, false, gatewayv1.ListenerReasonInvalidRouteKinds, "only HTTPRoute is supported", gen)
		}
		if accepted.Status == metav1.ConditionTrue {
			anyAccepted = true
			l.accepted = true
			hostnames[portKey+"/"+host] = true
			name, ok := ports[spec.Port]
			if !ok {
				name = shortName("gw", gw.Name, portKey)
				ports[spec.Port] = name
				g.taken[portKey] = true
				g.listeners = append(g.listeners, &policyv1.Listener{Name: name, Address: net.JoinHostPort(g.in.Host, portKey), Http2: true})
			}
			l.envoy = name
			l.allows = kindsOK && allowsNamespace(spec.AllowedRoutes)
		}
		st.Conditions = []metav1.Condition{accepted, resolved, conflicted}
		statuses = append(statuses, st)
	}
	g.byGateway[gw.Name] = ls
	g.res.Listeners[gw.Name] = statuses
	cond := condition(gatewayv1.GatewayConditionAccepted, true, gatewayv1.GatewayReasonAccepted, "accepted", gen)
	switch {
	case len(gw.Spec.Addresses) > 0:
		cond = condition(gatewayv1.GatewayConditionAccepted, false, gatewayv1.GatewayReasonUnsupportedAddress, "spec.addresses is not supported: Envoy's address is the deployment's", gen)
		g.dropListeners(gw.Name)
	case !anyAccepted:
		cond = condition(gatewayv1.GatewayConditionAccepted, false, gatewayv1.GatewayReasonListenersNotValid, "no listener is valid", gen)
	}
	g.res.GatewayConditions[gw.Name] = []metav1.Condition{cond}
}

// dropListeners forgets the policy listeners of a refused Gateway, and
// frees their ports.
func (g *gatewayBuild) dropListeners(gateway string) {
	for _, l := range g.byGateway[gateway] {
		if l.envoy != "" {
			g.listeners = slices.DeleteFunc(g.listeners, func(pl *policyv1.Listener) bool { return pl.Name == l.envoy })
			delete(g.taken, strconv.Itoa(int(l.spec.Port)))
		}
		l.accepted, l.allows, l.envoy = false, false, ""
	}
}

// allowsNamespace says whether routes of the Gateway's own namespace may
// attach: Same and All do. A namespace selector is not evaluated (the
// store watches one namespace and not Namespaces), so it admits none.
func allowsNamespace(a *gatewayv1.AllowedRoutes) bool {
	if a == nil || a.Namespaces == nil || a.Namespaces.From == nil {
		return true
	}
	f := *a.Namespaces.From
	return f == gatewayv1.NamespacesFromSame || f == gatewayv1.NamespacesFromAll
}

func httpRouteKind() gatewayv1.RouteGroupKind {
	group := gatewayv1.Group(gatewayv1.GroupName)
	return gatewayv1.RouteGroupKind{Group: &group, Kind: "HTTPRoute"}
}

func isHTTPRouteKind(k gatewayv1.RouteGroupKind) bool {
	return k.Kind == "HTTPRoute" && (k.Group == nil || *k.Group == gatewayv1.GroupName)
}

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
		for k, f := range rule.Filters {
			switch f.Type {
			case gatewayv1.HTTPRouteFilterRequestHeaderModifier, gatewayv1.HTTPRouteFilterResponseHeaderModifier, gatewayv1.HTTPRouteFilterURLRewrite:
			default:
				return nil, &ruleProblem{gatewayv1.RouteReasonIncompatibleFilters, fmt.Sprintf("%s.filters[%d]: %s is not supported", where, k, f.Type)}, nil
			}
		}
		backends, kind, p, u := g.backendRefs(r, rule.BackendRefs, where, endpoints)
		if p != nil {
			return nil, p, nil
		}
		if unresolved == nil {
			unresolved = u
		}
		base := &policyv1.Route{Kind: kind}
		if len(backends) == 1 {
			base.Backend = backends[0].GetName()
		} else {
			base.Backends = backends
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
			if base.Rewrite.GetPrefix() != "" && pr.Match.GetPrefix() == "" {
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
		case o.Namespace != nil && string(*o.Namespace) != r.Namespace:
			fail(gatewayv1.RouteReasonRefNotPermitted, "a Service in another namespace is not watched (ReferenceGrant is not supported)")
			continue
		case o.Port == nil:
			fail(gatewayv1.RouteReasonUnsupportedValue, "a Service back end needs a port")
			continue
		}
		weight := uint32(1)
		if ref.Weight != nil {
			weight = uint32(max(*ref.Weight, 0))
		}
		name := shortName("svc", string(o.Name), strconv.Itoa(int(*o.Port)))
		svc, ok := g.in.Service(string(o.Name))
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
			fail(gatewayv1.RouteReasonBackendNotFound, fmt.Sprintf("no Service named %q", o.Name))
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
				eps := endpoints(ServiceRef{Name: string(o.Name), Namespace: r.Namespace, Port: int32(*o.Port)})
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

// shortName joins parts into a policy name (lower case, at most 63
// bytes); a longer one keeps its head and ends in a hash of the whole, so
// distinct objects keep distinct names.
func shortName(parts ...string) string {
	n := strings.ToLower(strings.Join(parts, "-"))
	if len(n) <= 63 {
		return n
	}
	sum := sha256.Sum256([]byte(n))
	return strings.TrimRight(n[:50], "-.") + "-" + hex.EncodeToString(sum[:])[:12]
}

func cloneRoute(r *policyv1.Route) *policyv1.Route {
	return proto.Clone(r).(*policyv1.Route)
}

// oldestFirst orders objects as Gateway API resolves conflicts: by
// creation time, then name.
func oldestFirst[T any](items []T, meta func(*T) *metav1.ObjectMeta) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	slices.SortStableFunc(out, func(a, b *T) int {
		ma, mb := meta(a), meta(b)
		return cmp.Or(ma.CreationTimestamp.Compare(mb.CreationTimestamp.Time), cmp.Compare(ma.Name, mb.Name))
	})
	return out
}

func condition[T, R ~string](typ T, ok bool, reason R, msg string, gen int64) metav1.Condition {
	st := metav1.ConditionFalse
	if ok {
		st = metav1.ConditionTrue
	}
	return metav1.Condition{Type: string(typ), Status: st, Reason: string(reason), Message: bound(msg), ObservedGeneration: gen}
}

// setConditions merges conditions into a list, keeping transition times
// of those that did not change.
func setConditions(list *[]metav1.Condition, conds ...metav1.Condition) {
	for _, c := range conds {
		meta.SetStatusCondition(list, c)
	}
}
