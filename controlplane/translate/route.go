package translate

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// DefaultWebSocketIdleTimeout closes a voice stream that has carried nothing
// for this long when the policy does not say otherwise.
const DefaultWebSocketIdleTimeout = 5 * time.Minute

// UpgradeRequiredSuffix names the companion route that answers a plain HTTP
// request on a WebSocket path.
const UpgradeRequiredSuffix = ".upgrade-required"

// routeConfig builds the route table of one listener, in policy order.
func routeConfig(listener string, routes []*policyv1.Route) *routev3.RouteConfiguration {
	vh := &routev3.VirtualHost{Name: listener, Domains: []string{"*"}}
	for _, r := range routes {
		switch r.GetKind() {
		case policy.KindWebSocket:
			vh.Routes = append(vh.Routes, webSocketRoute(r), upgradeRequiredRoute(r))
		case policy.KindHTTP:
			vh.Routes = append(vh.Routes, httpRoute(r))
		}
	}
	return &routev3.RouteConfiguration{Name: listener, VirtualHosts: []*routev3.VirtualHost{vh}}
}

func pathMatch(r *policyv1.Route) *routev3.RouteMatch {
	m := &routev3.RouteMatch{}
	if p := r.GetMatch().GetPath(); p != "" {
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: p}
	} else {
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: r.GetMatch().GetPrefix()}
	}
	return m
}

// webSocketRoute is the direct path. It matches only real upgrades, so that
// a plain request can never reach a voice back end around the handshake
// check. It has no route timeout (a call lasts as long as it lasts), no retry
// policy (a replayed handshake is a new call) and nothing that buffers.
func webSocketRoute(r *policyv1.Route) *routev3.Route {
	m := pathMatch(r)
	m.Headers = []*routev3.HeaderMatcher{{
		Name: "upgrade",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "websocket"},
			IgnoreCase:   true,
		}},
	}}
	idle := DefaultWebSocketIdleTimeout
	if d := r.GetIdleTimeout(); d != nil {
		idle = d.AsDuration()
	}
	return &routev3.Route{
		Name:  r.GetName(),
		Match: m,
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: r.GetBackend()},
			Timeout:          durationpb.New(0),
			IdleTimeout:      durationpb.New(idle),
			UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{
				UpgradeType: "websocket",
				Enabled:     wrapperspb.Bool(true),
			}},
		}},
	}
}

// upgradeRequiredRoute answers 426 to anything on a WebSocket path that is
// not an upgrade.
func upgradeRequiredRoute(r *policyv1.Route) *routev3.Route {
	return &routev3.Route{
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
			{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}},
		},
	}
}

// httpRoute is a REST route on the full filter chain; WebSocket upgrades are
// refused on it so that streams cannot sneak onto the request path.
func httpRoute(r *policyv1.Route) *routev3.Route {
	action := &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: r.GetBackend()},
		UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{
			UpgradeType: "websocket",
			Enabled:     wrapperspb.Bool(false),
		}},
	}
	if d := r.GetIdleTimeout(); d != nil {
		action.IdleTimeout = clone(d)
	}
	return &routev3.Route{
		Name:   r.GetName(),
		Match:  pathMatch(r),
		Action: &routev3.Route_Route{Route: action},
	}
}
