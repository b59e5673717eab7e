package kube

import (
	"context"
	"fmt"
	"net"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/directpipe/directpipe/controlplane/policy"
)

// writeGateway writes the status of the Gateway API objects the policy
// was built from: the conversion's conditions, plus Programmed, which
// says whether the policy holding them is served.
func (w *statusWriter) writeGateway(ctx context.Context, b *Built, served error, problems map[string][]string) error {
	g := b.Gateway
	if g == nil {
		return nil
	}
	var errs []error
	update := func(obj client.Object, before any, after any) {
		if equality.Semantic.DeepEqual(before, after) {
			return
		}
		if err := w.s.client.Status().Update(ctx, obj); err != nil {
			errs = append(errs, fmt.Errorf("%T %s: %w", obj, obj.GetName(), err))
		}
	}
	for _, c := range g.Classes {
		before := c.Status.DeepCopy()
		setConditions(&c.Status.Conditions, g.ClassConditions[c.Name]...)
		update(c, before, &c.Status)
	}
	for _, gw := range g.Gateways {
		before := gw.Status.DeepCopy()
		accepted := g.GatewayConditions[gw.Name]
		programmed := condition(gatewayv1.GatewayConditionProgrammed, true, gatewayv1.GatewayReasonProgrammed, "served to Envoy as policy revision "+policy.Revision(b.Policy), gw.Generation)
		switch {
		case len(accepted) > 0 && accepted[0].Status != metav1.ConditionTrue:
			programmed = condition(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "the Gateway is not accepted", gw.Generation)
		case served != nil:
			programmed = condition(gatewayv1.GatewayConditionProgrammed, false, gatewayv1.GatewayReasonInvalid, "the namespace's policy is refused, the last good one keeps serving: "+served.Error(), gw.Generation)
		}
		setConditions(&gw.Status.Conditions, append(accepted, programmed)...)
		gw.Status.Listeners = mergeListeners(gw.Status.Listeners, g.Listeners[gw.Name], programmed, gw.Generation)
		gw.Status.Addresses = nil
		if ip := net.ParseIP(w.s.cfg.GatewayHost); ip != nil && !ip.IsUnspecified() {
			t := gatewayv1.IPAddressType
			gw.Status.Addresses = []gatewayv1.GatewayStatusAddress{{Type: &t, Value: ip.String()}}
		}
		update(gw, before, &gw.Status)
	}
	for _, r := range g.Routes {
		before := r.Status.DeepCopy()
		parents := g.Parents[r.Name]
		if msgs := problems[Key("HTTPRoute", r.Name)]; len(msgs) > 0 {
			for i := range parents {
				if parents[i].Conditions[0].Status == metav1.ConditionTrue {
					parents[i].Conditions[0] = condition(gatewayv1.RouteConditionAccepted, false, gatewayv1.RouteReasonUnsupportedValue, strings.Join(msgs, "; "), r.Generation)
				}
			}
		}
		r.Status.Parents = mergeParents(r.Status.Parents, parents)
		update(r, before, &r.Status)
	}
	if len(errs) > 0 {
		return fmt.Errorf("kube: gateway status: %w", errs[0])
	}
	return nil
}

// mergeListeners keeps each listener's condition times and adds
// Programmed: a listener is programmed when it is accepted and the
// Gateway is.
func mergeListeners(old, now []gatewayv1.ListenerStatus, gatewayProgrammed metav1.Condition, gen int64) []gatewayv1.ListenerStatus {
	out := make([]gatewayv1.ListenerStatus, 0, len(now))
	for _, l := range now {
		conds := []metav1.Condition{}
		for _, o := range old {
			if o.Name == l.Name {
				conds = o.Conditions
			}
		}
		p := condition(gatewayv1.ListenerConditionProgrammed, true, gatewayv1.ListenerReasonProgrammed, "served", gen)
		if !listenerAccepted(l) || gatewayProgrammed.Status != metav1.ConditionTrue {
			p = condition(gatewayv1.ListenerConditionProgrammed, false, gatewayv1.ListenerReasonInvalid, "not served", gen)
		}
		setConditions(&conds, append(l.Conditions, p)...)
		l.Conditions = conds
		out = append(out, l)
	}
	return out
}

func listenerAccepted(l gatewayv1.ListenerStatus) bool {
	for _, c := range l.Conditions {
		if c.Type == string(gatewayv1.ListenerConditionAccepted) {
			return c.Status == metav1.ConditionTrue
		}
	}
	return false
}

// mergeParents replaces the entries this controller owns, keeping other
// controllers' and the condition times of ours.
func mergeParents(old, ours []gatewayv1.RouteParentStatus) []gatewayv1.RouteParentStatus {
	// Never null: the schema requires the list, empty or not.
	out := []gatewayv1.RouteParentStatus{}
	for _, p := range old {
		if p.ControllerName != ControllerName {
			out = append(out, p)
		}
	}
	for _, p := range ours {
		conds := []metav1.Condition{}
		for _, o := range old {
			if o.ControllerName == ControllerName && equality.Semantic.DeepEqual(o.ParentRef, p.ParentRef) {
				conds = o.Conditions
			}
		}
		setConditions(&conds, p.Conditions...)
		p.Conditions = conds
		out = append(out, p)
	}
	return out
}
