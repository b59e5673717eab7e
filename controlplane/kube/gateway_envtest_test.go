package kube

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// gatewayStatus reads an object and returns a condition of it as
// "Status/Reason" ("none" when absent), found by find.
func (e *testEnv) gatewayStatus(obj client.Object, find func() []metav1.Condition, typ string) string {
	key := client.ObjectKey{Namespace: obj.GetNamespace(), Name: obj.GetName()}
	if err := e.c.Get(context.Background(), key, obj); err != nil {
		return err.Error()
	}
	return condOf(find(), typ)
}

func (e *testEnv) waitGatewayStatus(what string, obj client.Object, find func() []metav1.Condition, typ, want string) {
	e.t.Helper()
	eventually(e.t, what+" "+typ+"="+want, func() (bool, string) {
		got := e.gatewayStatus(obj, find, typ)
		return got == want, got
	})
}

// TestGatewayAPIReconcile runs a replica against Gateway API objects: a
// class of ours, a Gateway, HTTPRoutes to a WebSocket Service and a plain
// one, and a handshake policy attached to the Gateway. What it serves and
// the status the leader writes are checked, refused routes included.
func TestGatewayAPIReconcile(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	e.agentsService() // a plain port: the REST back end
	ws := WebSocketAppProtocol
	e.create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "voice"}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "ws", Port: 80, AppProtocol: &ws}},
	}})
	class := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: e.ns}, Spec: gatewayv1.GatewayClassSpec{ControllerName: ControllerName}}
	if err := e.c.Create(ctx, class); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.c.Delete(ctx, class) })
	gw := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Name: "edge"}, Spec: gatewayv1.GatewaySpec{
		GatewayClassName: gatewayv1.ObjectName(e.ns),
		Listeners: []gatewayv1.Listener{
			{Name: "http", Port: 18080, Protocol: gatewayv1.HTTPProtocolType},
			{Name: "tls", Port: 18443, Protocol: gatewayv1.TLSProtocolType, TLS: &gatewayv1.ListenerTLSConfig{Mode: ptr.To(gatewayv1.TLSModePassthrough)}},
		},
	}}
	e.create(gw)
	e.create(&HandshakePolicy{ObjectMeta: metav1.ObjectMeta{Name: "callers"}, Spec: HandshakePolicySpec{
		Sources: []TokenSource{{Bearer: true}}, APIKeys: []APIKey{{SHA256: strings.Repeat("ab", 32), Identity: "tester"}},
		TargetRefs: []PolicyTargetRef{{Group: gatewayv1.GroupName, Kind: "Gateway", Name: "edge"}},
	}})
	route := func(name string, rules ...gatewayv1.HTTPRouteRule) *gatewayv1.HTTPRoute {
		r := httpRoute(name, rules...)
		r.Namespace = ""
		return &r
	}
	prefix := func(p string) []gatewayv1.HTTPRouteMatch {
		return []gatewayv1.HTTPRouteMatch{{Path: &gatewayv1.HTTPPathMatch{Value: ptr.To(p)}}}
	}
	e.create(route("app",
		gatewayv1.HTTPRouteRule{Matches: prefix("/v1/voice"), BackendRefs: []gatewayv1.HTTPBackendRef{serviceRef("voice", 80)}},
		gatewayv1.HTTPRouteRule{Matches: prefix("/api/"), BackendRefs: []gatewayv1.HTTPBackendRef{serviceRef("agents", 80)}},
	))
	s, _ := e.replica("a")
	eventually(t, "the Gateway's routes are served", func() (bool, string) {
		p := s.get()
		var got []string
		for _, r := range p.GetRoutes() {
			got = append(got, routeSummary(r))
		}
		want := "hr-app-r0-m0-gw-edge-18080 websocket gw-edge-18080 /v1/voice svc-voice-80 callers\n" +
			"hr-app-r1-m0-gw-edge-18080 http gw-edge-18080 /api/ svc-agents-80 "
		return strings.Join(got, "\n") == want, strings.Join(got, "\n")
	})
	// Every replica serves the same policy; one writes status.
	other, _ := e.replica("b")
	eventually(t, "the second replica serves the same policy", func() (bool, string) {
		p := other.get()
		return p != nil && policy.Revision(p) == policy.Revision(s.get()), fmt.Sprint(p)
	})
	if l := s.get().GetListeners(); len(l) != 2 || l[1].GetAddress() != "0.0.0.0:18080" {
		t.Errorf("listeners %v: want the deployment's and the Gateway's port", l)
	}
	var agents *policyv1.Backend
	for _, b := range s.get().GetBackends() {
		if b.GetName() == "svc-agents-80" {
			agents = b
		}
	}
	if got := strings.Join(agents.GetEndpoints(), ","); got != "10.1.0.1:8080,10.1.0.2:8080" {
		t.Errorf("the Service's endpoints from its EndpointSlices: %s", got)
	}

	classConds := func() []metav1.Condition { return class.Status.Conditions }
	gwConds := func() []metav1.Condition { return gw.Status.Conditions }
	listener := func(name string) func() []metav1.Condition {
		return func() []metav1.Condition {
			for _, l := range gw.Status.Listeners {
				if string(l.Name) == name {
					return l.Conditions
				}
			}
			return nil
		}
	}
	e.waitGatewayStatus("class", class, classConds, "Accepted", "True/Accepted")
	e.waitGatewayStatus("gateway", gw, gwConds, "Accepted", "True/Accepted")
	e.waitGatewayStatus("gateway", gw, gwConds, "Programmed", "True/Programmed")
	e.waitGatewayStatus("listener http", gw, listener("http"), "Programmed", "True/Programmed")
	e.waitGatewayStatus("listener tls", gw, listener("tls"), "Accepted", "False/UnsupportedProtocol")
	if n := gw.Status.Listeners[0].AttachedRoutes; n != 1 {
		t.Errorf("attachedRoutes %d, want 1", n)
	}
	app := &gatewayv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: e.ns}}
	parent := func(r *gatewayv1.HTTPRoute) func() []metav1.Condition {
		return func() []metav1.Condition {
			for _, p := range r.Status.Parents {
				if p.ControllerName == ControllerName {
					return p.Conditions
				}
			}
			return nil
		}
	}
	e.waitGatewayStatus("app", app, parent(app), "Accepted", "True/Accepted")
	e.waitGatewayStatus("app", app, parent(app), "ResolvedRefs", "True/ResolvedRefs")

	// Refused: a filter directpipe does not carry, and a back end that
	// does not exist. The rest keeps serving.
	redirect := route("redirect", gatewayv1.HTTPRouteRule{
		Matches: prefix("/old/"),
		Filters: []gatewayv1.HTTPRouteFilter{{Type: gatewayv1.HTTPRouteFilterRequestRedirect, RequestRedirect: &gatewayv1.HTTPRequestRedirectFilter{StatusCode: ptr.To(301)}}},
	})
	missing := route("missing", gatewayv1.HTTPRouteRule{Matches: prefix("/gone/"), BackendRefs: []gatewayv1.HTTPBackendRef{serviceRef("gone", 80)}})
	e.create(redirect)
	e.create(missing)
	redirect.Namespace, missing.Namespace = e.ns, e.ns
	e.waitGatewayStatus("redirect", redirect, parent(redirect), "Accepted", "False/IncompatibleFilters")
	e.waitGatewayStatus("missing", missing, parent(missing), "ResolvedRefs", "False/BackendNotFound")
	e.waitGatewayStatus("missing", missing, parent(missing), "Accepted", "True/Accepted")
	e.waitGatewayStatus("gateway", gw, gwConds, "Programmed", "True/Programmed")
	for _, r := range s.get().GetRoutes() {
		if strings.HasPrefix(r.GetName(), "hr-redirect") {
			t.Errorf("a refused route is served: %s", routeSummary(r))
		}
	}
	// The Service appears: resolved, with its endpoints.
	e.create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "gone"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}})
	e.waitGatewayStatus("missing", missing, parent(missing), "ResolvedRefs", "True/ResolvedRefs")
	if c := e.gatewayStatus(class, classConds, "Accepted"); c != "True/Accepted" {
		t.Errorf("class: %s", c)
	}

	// Moved to a Gateway that is not ours: our entry leaves its status.
	eventually(t, "the route moved", func() (bool, string) {
		if err := e.c.Get(ctx, client.ObjectKeyFromObject(missing), missing); err != nil {
			return false, err.Error()
		}
		missing.Spec.ParentRefs = []gatewayv1.ParentReference{{Name: "someone-elses"}}
		err := e.c.Update(ctx, missing)
		return err == nil, fmt.Sprint(err)
	})
	e.waitGatewayStatus("moved", missing, parent(missing), "Accepted", "none")
}
