package kube

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// gwFixture is a namespace with a GatewayClass of ours, a Gateway "edge"
// with one HTTP listener on port 18080, a WebSocket Service "agents" and
// a plain one "api", and a handshake policy attached to the Gateway.
func gwFixture() Objects {
	ws := WebSocketAppProtocol
	services := map[string]*corev1.Service{
		"agents": {Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "ws", Port: 80, AppProtocol: &ws}}}},
		"api":    {Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}},
	}
	o := testObjects()
	o.Routes = nil // the Gateway API alone
	o.Policies[0].Spec.TargetRefs = []PolicyTargetRef{{Group: gatewayv1.GroupName, Kind: "Gateway", Name: "edge"}}
	o.Gateway = &GatewayObjects{
		Host: "127.0.0.1",
		Classes: []gatewayv1.GatewayClass{
			{ObjectMeta: metav1.ObjectMeta{Name: "directpipe"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: ControllerName}},
			{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: gatewayv1.GatewayClassSpec{ControllerName: "example.com/other"}},
		},
		Gateways: []gatewayv1.Gateway{{
			ObjectMeta: metav1.ObjectMeta{Name: "edge", Namespace: "voice"},
			Spec: gatewayv1.GatewaySpec{GatewayClassName: "directpipe", Listeners: []gatewayv1.Listener{
				{Name: "http", Port: 18080, Protocol: gatewayv1.HTTPProtocolType},
			}},
		}},
		Routes: []gatewayv1.HTTPRoute{httpRoute("voice", gatewayv1.HTTPRouteRule{
			Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchExact), Value: ptr.To("/v1/voice")}}},
			BackendRefs: []gatewayv1.HTTPBackendRef{serviceRef("agents", 80)},
		}, gatewayv1.HTTPRouteRule{
			Matches:     []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Value: ptr.To("/api/")}}},
			BackendRefs: []gatewayv1.HTTPBackendRef{serviceRef("api", 8080)},
		})},
		Service: func(name string) (*corev1.Service, bool) { s, ok := services[name]; return s, ok },
	}
	return o
}

func httpRoute(name string, rules ...gatewayv1.HTTPRouteRule) gatewayv1.HTTPRoute {
	return gatewayv1.HTTPRoute{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "voice"},
		Spec: gatewayv1.HTTPRouteSpec{
			CommonRouteSpec: gatewayv1.CommonRouteSpec{ParentRefs: []gatewayv1.ParentReference{{Name: "edge"}}},
			Rules:           rules,
		},
	}
}

func serviceRef(name string, port int32) gatewayv1.HTTPBackendRef {
	return gatewayv1.HTTPBackendRef{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{
		Name: gatewayv1.ObjectName(name), Port: ptr.To(gatewayv1.PortNumber(port)),
	}}}
}

func testEndpoints(ref ServiceRef) Endpoints {
	return Endpoints{Ready: []string{"10.0.0.1:8080"}}
}

// routeSummary is a policy route in one line: name kind listener match
// backend auth.
func routeSummary(r *policyv1.Route) string {
	m := r.GetMatch()
	match := m.GetPath() + m.GetPrefix()
	if len(m.GetHosts()) > 0 {
		match += "@" + strings.Join(m.GetHosts(), ",")
	}
	for _, h := range m.GetHeaders() {
		match += "[" + h.GetName() + "=" + h.GetExact() + "]"
	}
	backend := r.GetBackend()
	for _, b := range r.GetBackends() {
		backend += b.GetName() + "*" + string(rune('0'+b.GetWeight()))
	}
	return strings.Join([]string{r.GetName(), r.GetKind(), r.GetListener(), match, backend, r.GetAuth()}, " ")
}

func condOf(conds []metav1.Condition, typ string) string {
	for _, c := range conds {
		if c.Type == typ {
			return string(c.Status) + "/" + c.Reason
		}
	}
	return "none"
}

func TestGatewayConversion(t *testing.T) {
	public := []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}}
	cases := []struct {
		name   string
		edit   func(o *Objects)
		routes []string // routeSummary of each policy route, in order
		// route and gateway conditions: "<kind>/<name> <type>" → "Status/Reason"
		conds map[string]string
	}{{
		name: "websocket and rest rules",
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-agents-80 callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-api-8080 ",
		},
		conds: map[string]string{
			"class/directpipe Accepted": "True/Accepted", "gateway/edge Accepted": "True/Accepted",
			"listener/edge/http Accepted": "True/Accepted", "listener/edge/http ResolvedRefs": "True/ResolvedRefs", "listener/edge/http Conflicted": "False/NoConflicts",
			"route/voice Accepted": "True/Accepted", "route/voice ResolvedRefs": "True/ResolvedRefs",
		},
	}, {
		name: "a policy on the route wins over the gateway's",
		edit: func(o *Objects) {
			p := o.Policies[0]
			p.Name, p.Spec.TargetRefs = "route-callers", []PolicyTargetRef{{Group: gatewayv1.GroupName, Kind: "HTTPRoute", Name: "voice"}}
			o.Policies = append(o.Policies, p)
		},
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-agents-80 route-callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-api-8080 ",
		},
	}, {
		name: "precedence: exact, longer prefix, more headers",
		edit: func(o *Objects) {
			o.Gateway.Routes = []gatewayv1.HTTPRoute{httpRoute("r",
				gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{serviceRef("api", 8080)}},
				gatewayv1.HTTPRouteRule{
					Matches: []gatewayv1.HTTPRouteMatch{
						{Path: &gatewayv1.HTTPPathMatch{Value: ptr.To("/a")}},
						{Path: &gatewayv1.HTTPPathMatch{Value: ptr.To("/a")}, Headers: []gatewayv1.HTTPHeaderMatch{{Name: "X-Tenant", Value: "t1"}}},
						{Path: &gatewayv1.HTTPPathMatch{Type: ptr.To(gatewayv1.PathMatchExact), Value: ptr.To("/")}},
					},
					BackendRefs: []gatewayv1.HTTPBackendRef{serviceRef("api", 8080)},
				})}
		},
		routes: []string{
			"hr-r-r1-m2-gw-edge-18080 http gw-edge-18080 / svc-api-8080 ",
			"hr-r-r1-m1-gw-edge-18080 http gw-edge-18080 /a[x-tenant=t1] svc-api-8080 ",
			"hr-r-r1-m0-gw-edge-18080 http gw-edge-18080 /a svc-api-8080 ",
			"hr-r-r0-m0-gw-edge-18080 http gw-edge-18080 / svc-api-8080 ",
		},
	}, {
		name: "weighted back ends",
		edit: func(o *Objects) {
			a, b := serviceRef("api", 8080), serviceRef("agents", 80)
			a.Weight = ptr.To(int32(3))
			b.Name = "api2"
			b.Weight = ptr.To(int32(1))
			o.Gateway.Routes = []gatewayv1.HTTPRoute{httpRoute("r", gatewayv1.HTTPRouteRule{BackendRefs: []gatewayv1.HTTPBackendRef{a, b}})}
			svc := o.Gateway.Service
			o.Gateway.Service = func(n string) (*corev1.Service, bool) {
				if n == "api2" {
					return &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, true
				}
				return svc(n)
			}
		},
		routes: []string{"hr-r-r0-m0-gw-edge-18080 http gw-edge-18080 / svc-api-8080*3svc-api2-80*1 "},
	}, {
		name: "hostnames intersect the listener's",
		edit: func(o *Objects) {
			o.Gateway.Gateways[0].Spec.Listeners[0].Hostname = ptr.To(gatewayv1.Hostname("*.example.com"))
			o.Gateway.Routes[0].Spec.Hostnames = []gatewayv1.Hostname{"voice.example.com", "other.org"}
		},
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice@voice.example.com svc-agents-80 callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/@voice.example.com svc-api-8080 ",
		},
	}, {
		name: "no hostname in common",
		edit: func(o *Objects) {
			o.Gateway.Gateways[0].Spec.Listeners[0].Hostname = ptr.To(gatewayv1.Hostname("voice.example.com"))
			o.Gateway.Routes[0].Spec.Hostnames = []gatewayv1.Hostname{"other.org"}
		},
		conds: map[string]string{"route/voice Accepted": "False/NoMatchingListenerHostname"},
	}, {
		name: "unsupported filter refuses the route",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[1].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{StatusCode: ptr.To(301)}}}
			o.Gateway.Routes[0].Spec.Rules[1].BackendRefs = nil
		},
		conds: map[string]string{"route/voice Accepted": "False/IncompatibleFilters", "route/voice ResolvedRefs": "True/ResolvedRefs"},
	}, {
		name: "header filters on a websocket rule refuse the route",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[0].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "x-a", Value: "1"}}}}}
		},
		conds: map[string]string{"route/voice Accepted": "False/IncompatibleFilters"},
	}, {
		name: "header modifiers and a rewrite on a REST rule",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[1].Filters = []gatewayv1.HTTPRouteFilter{
				{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-Tenant", Value: "t1"}}, Remove: []string{"X-Debug"}}},
				{Type: gatewayv1.HTTPRouteFilterResponseHeaderModifier, ResponseHeaderModifier: &gatewayv1.HTTPHeaderFilter{Remove: []string{"Server"}}},
				{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/v2/")}}},
			}
		},
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-agents-80 callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-api-8080 ",
		},
		conds: map[string]string{"route/voice Accepted": "True/Accepted"},
	}, {
		name: "appending a header value is not supported",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[1].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Add: []gatewayv1.HTTPHeader{{Name: "x-a", Value: "1"}}}}}
		},
		conds: map[string]string{"route/voice Accepted": "False/IncompatibleFilters"},
	}, {
		name: "a prefix rewrite needs a prefix match",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[1].Matches[0].Path.Type = ptr.To(gatewayv1.PathMatchExact)
			o.Gateway.Routes[0].Spec.Rules[1].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/v2/")}}}}
		},
		conds: map[string]string{"route/voice Accepted": "False/UnsupportedValue"},
	}, {
		name: "regular expression paths are not supported",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[1].Matches[0].Path.Type = ptr.To(gatewayv1.PathMatchRegularExpression)
		},
		conds: map[string]string{"route/voice Accepted": "False/UnsupportedValue"},
	}, {
		name: "a missing Service: served, not resolved",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[1].BackendRefs[0].Name = "gone"
		},
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-agents-80 callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-gone-8080 ",
		},
		conds: map[string]string{"route/voice Accepted": "True/Accepted", "route/voice ResolvedRefs": "False/BackendNotFound"},
	}, {
		name: "a back end of another kind",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.Rules[1].BackendRefs[0].Kind = ptr.To(gatewayv1.Kind("Bucket"))
			o.Gateway.Routes[0].Spec.Rules[1].BackendRefs = append(o.Gateway.Routes[0].Spec.Rules[1].BackendRefs, serviceRef("api", 8080))
		},
		// The other kind is dropped, the Service serves.
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-agents-80 callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-api-8080 ",
		},
		conds: map[string]string{"route/voice ResolvedRefs": "False/InvalidKind"},
	}, {
		name: "HTTPS listeners are not supported",
		edit: func(o *Objects) {
			o.Gateway.Gateways[0].Spec.Listeners[0].Protocol = gatewayv1.HTTPSProtocolType
		},
		conds: map[string]string{"gateway/edge Accepted": "False/ListenersNotValid", "listener/edge/http Accepted": "False/UnsupportedProtocol", "route/voice Accepted": "False/NotAllowedByListeners"},
	}, {
		name: "the deployment's port is taken",
		edit: func(o *Objects) {
			o.Gateway.Gateways[0].Spec.Listeners[0].Port = 10000
		},
		conds: map[string]string{"listener/edge/http Accepted": "False/PortUnavailable"},
	}, {
		name: "two listeners with one hostname on one port",
		edit: func(o *Objects) {
			l := &o.Gateway.Gateways[0].Spec.Listeners
			*l = append(*l, gatewayv1.Listener{Name: "again", Port: 18080, Protocol: gatewayv1.HTTPProtocolType})
		},
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-agents-80 callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-api-8080 ",
		},
		conds: map[string]string{"listener/edge/again Conflicted": "True/HostnameConflict", "listener/edge/http Conflicted": "False/NoConflicts"},
	}, {
		name: "two listeners on one port, one route on both",
		edit: func(o *Objects) {
			l := &o.Gateway.Gateways[0].Spec.Listeners
			(*l)[0].Hostname = ptr.To(gatewayv1.Hostname("a.example.com"))
			*l = append(*l, gatewayv1.Listener{Name: "b", Port: 18080, Protocol: gatewayv1.HTTPProtocolType, Hostname: ptr.To(gatewayv1.Hostname("b.example.com"))})
			o.Gateway.Routes[0].Spec.Rules = o.Gateway.Routes[0].Spec.Rules[1:]
		},
		routes: []string{"hr-voice-r0-m0-gw-edge-18080 http gw-edge-18080 /api/@a.example.com,b.example.com svc-api-8080 "},
		conds:  map[string]string{"route/voice Accepted": "True/Accepted"},
	}, {
		name: "a Gateway with addresses frees its port",
		edit: func(o *Objects) {
			withAddr := o.Gateway.Gateways[0]
			withAddr.Name = "a-first"
			withAddr.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: "10.0.0.9"}}
			o.Gateway.Gateways = append([]gatewayv1.Gateway{withAddr}, o.Gateway.Gateways...)
		},
		routes: []string{
			"hr-voice-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-agents-80 callers",
			"hr-voice-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-api-8080 ",
		},
		conds: map[string]string{"gateway/a-first Accepted": "False/UnsupportedAddress", "listener/edge/http Accepted": "True/Accepted"},
	}, {
		name: "a section that does not exist",
		edit: func(o *Objects) {
			o.Gateway.Routes[0].Spec.ParentRefs[0].SectionName = ptr.To(gatewayv1.SectionName("nope"))
		},
		conds: map[string]string{"route/voice Accepted": "False/NoMatchingParent"},
	}, {
		name: "another controller's class is left alone",
		edit: func(o *Objects) {
			o.Gateway.Gateways[0].Spec.GatewayClassName = "other"
		},
		conds: map[string]string{"gateway/edge Accepted": "none", "route/voice Accepted": "none"},
	}}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := gwFixture()
			if c.edit != nil {
				c.edit(&o)
			}
			b := Build(public, o, testEndpoints)
			var got []string
			for _, r := range b.Policy.GetRoutes() {
				got = append(got, routeSummary(r))
			}
			if strings.Join(got, "\n") != strings.Join(c.routes, "\n") {
				t.Errorf("routes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.routes, "\n"))
			}
			if len(c.routes) > 0 {
				if err := policy.Validate(b.Policy); err != nil {
					t.Errorf("the policy does not validate: %v", err)
				}
			}
			for k, want := range c.conds {
				what, typ, _ := strings.Cut(k, " ")
				if got := gatewayCondition(b.Gateway, what, typ); got != want {
					t.Errorf("%s: %s, want %s", k, got, want)
				}
			}
		})
	}
}

// gatewayCondition finds a condition in a conversion's result by object:
// class/<name>, gateway/<name>, listener/<gateway>/<listener>,
// route/<name> (its first parent).
func gatewayCondition(g *GatewayResult, what, typ string) string {
	kind, name, _ := strings.Cut(what, "/")
	switch kind {
	case "class":
		return condOf(g.ClassConditions[name], typ)
	case "gateway":
		return condOf(g.GatewayConditions[name], typ)
	case "listener":
		gw, l, _ := strings.Cut(name, "/")
		for _, st := range g.Listeners[gw] {
			if string(st.Name) == l {
				return condOf(st.Conditions, typ)
			}
		}
	case "route":
		if ps := g.Parents[name]; len(ps) > 0 {
			return condOf(ps[0].Conditions, typ)
		}
	}
	return "none"
}

func TestGatewayFiltersReachThePolicy(t *testing.T) {
	o := gwFixture()
	o.Gateway.Routes[0].Spec.Rules[1].Filters = []gatewayv1.HTTPRouteFilter{
		{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-Tenant", Value: "t1"}}, Remove: []string{"X-Debug"}}},
		{Type: gatewayv1.HTTPRouteFilterURLRewrite, URLRewrite: &gatewayv1.HTTPURLRewriteFilter{Path: &gatewayv1.HTTPPathModifier{Type: gatewayv1.PrefixMatchHTTPPathModifier, ReplacePrefixMatch: ptr.To("/v2/")}}},
	}
	r := Build(nil, o, testEndpoints).Policy.GetRoutes()[1]
	if h := r.GetRequestHeadersToAdd(); len(h) != 1 || h[0].GetName() != "x-tenant" || h[0].GetValue() != "t1" {
		t.Errorf("set headers: %v", h)
	}
	if h := r.GetRequestHeadersToRemove(); len(h) != 1 || h[0] != "x-debug" {
		t.Errorf("removed headers: %v", h)
	}
	if r.GetRewrite().GetPrefix() != "/v2/" {
		t.Errorf("rewrite: %v", r.GetRewrite())
	}
}

func TestGatewayClearsStaleParents(t *testing.T) {
	o := gwFixture()
	o.Gateway.Routes[0].Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "elsewhere"}}
	o.Gateway.Routes[0].Status.Parents = []gatewayv1.RouteParentStatus{
		{ParentRef: gatewayv1.ParentReference{Name: "edge"}, ControllerName: ControllerName},
	}
	g := Build(nil, o, testEndpoints).Gateway
	if len(g.Routes) != 1 || g.Parents["voice"] != nil {
		t.Errorf("a route no longer on our Gateway: %d routes, parents %v; want its old entry cleared", len(g.Routes), g.Parents["voice"])
	}
	if got := mergeParents([]gatewayv1.RouteParentStatus{{ControllerName: "example.com/other"}, {ControllerName: ControllerName}}, nil); len(got) != 1 || got[0].ControllerName != "example.com/other" {
		t.Errorf("merge keeps other controllers' entries only: %v", got)
	}
}

func TestGatewayKeepsOwnRoutesOnTheirListener(t *testing.T) {
	o := gwFixture()
	o.Routes = testObjects().Routes
	b := Build([]*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}}, o, testEndpoints)
	if err := policy.Validate(b.Policy); err != nil {
		t.Fatalf("our kinds and the Gateway API in one policy: %v", err)
	}
	if l := b.Policy.GetRoutes()[0].GetListener(); l != "public" {
		t.Errorf("a VoiceRoute on listener %q, want the deployment's", l)
	}
	if n := len(b.Policy.GetListeners()); n != 2 {
		t.Errorf("%d listeners, want the deployment's and the Gateway's", n)
	}
}

func TestHandshakePolicyConflict(t *testing.T) {
	o := gwFixture()
	older := o.Policies[0]
	older.Name = "z-older"
	older.CreationTimestamp = metav1.Unix(1, 0)
	o.Policies[0].CreationTimestamp = metav1.Unix(2, 0)
	o.Policies = append(o.Policies, older)
	b := Build(nil, o, testEndpoints)
	if got := b.Policy.GetRoutes()[0].GetAuth(); got != "z-older" {
		t.Errorf("auth %q: the older policy wins", got)
	}
	if msgs := b.Problems(nil)[Key("HandshakePolicy", "callers")]; len(msgs) != 1 || !strings.Contains(msgs[0], "already has HandshakePolicy z-older") {
		t.Errorf("the newer policy is told: %q", msgs)
	}
	if b.Err() != nil {
		t.Errorf("a lost conflict refuses no policy: %v", b.Err())
	}
}

func TestShortName(t *testing.T) {
	long := strings.Repeat("a", 80)
	n1, n2 := shortName("hr", long, "1"), shortName("hr", long, "2")
	if len(n1) > 63 || n1 == n2 {
		t.Errorf("long names: %q %q", n1, n2)
	}
	if got := shortName("hr", "Voice", "r0"); got != "hr-voice-r0" {
		t.Errorf("short name %q", got)
	}
}

func TestValidatorProblemsBlameTheHTTPRoute(t *testing.T) {
	o := gwFixture()
	o.Routes = testObjects().Routes
	o.Policies[0].Spec.IdentityHeader = "x-caller"
	// Setting the header that carries verified identities: the full
	// validator refuses it, the conversion cannot know.
	o.Gateway.Routes[0].Spec.Rules[1].Filters = []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestHeaderModifier, RequestHeaderModifier: &gatewayv1.HTTPHeaderFilter{Set: []gatewayv1.HTTPHeader{{Name: "X-Caller", Value: "admin"}}}}}
	b := Build([]*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}}, o, testEndpoints)
	err := policy.Validate(b.Policy)
	if err == nil {
		t.Fatal("a route setting the identity header validated")
	}
	problems := b.Problems(err)
	if msgs := problems[Key("HTTPRoute", "voice")]; len(msgs) == 0 {
		t.Errorf("the HTTPRoute is not told: %v", problems)
	}
	if msgs := problems[Key("VoiceRoute", "voice")]; len(msgs) != 0 {
		t.Errorf("a VoiceRoute is blamed: %v", msgs)
	}
}
