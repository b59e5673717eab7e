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
