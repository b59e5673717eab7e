package translate

import (
	"path/filepath"
	"slices"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/filter/contract"
)

// TestEveryRouteIsPinnedToTheMarker holds the route re-match lock for
// every golden policy (issue 11, item 2): each route accepts only an
// absent marker or its own name and removes the marker before
// forwarding, and each virtual host ends with the route-changed answer,
// which carries no policy: public to the filter.
func TestEveryRouteIsPinnedToTheMarker(t *testing.T) {
	inputs, _ := filepath.Glob("testdata/*.in.yaml")
	for _, in := range inputs {
		p, err := policy.LoadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Translate(p, testOptions)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range res[resource.RouteType] {
			for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
				routes := vh.GetRoutes()
				last := routes[len(routes)-1]
				if last.GetName() != contract.RouteChangedRoute || last.GetDirectResponse().GetStatus() != 500 {
					t.Errorf("%s: virtual host %s does not end with the route-changed answer", in, vh.GetName())
				}
				for _, route := range routes[:len(routes)-1] {
					pinned := slices.ContainsFunc(route.GetMatch().GetHeaders(), func(h *routev3.HeaderMatcher) bool {
						return h.GetName() == contract.RouteMarkerHeader && h.GetTreatMissingHeaderAsEmpty() &&
							h.GetStringMatch().GetSafeRegex().GetRegex() != ""
					})
					if !pinned || !slices.Contains(route.GetRequestHeadersToRemove(), contract.RouteMarkerHeader) {
						t.Errorf("%s: route %s is not pinned to the marker", in, route.GetName())
					}
				}
			}
		}
		for _, r := range res[resource.RouteType] {
			for _, vh := range r.(*routev3.RouteConfiguration).GetVirtualHosts() {
				last := vh.GetRoutes()[len(vh.GetRoutes())-1]
				if pol, ok := routePolicy(last); ok {
					t.Errorf("%s: %s names policy %q; it must be public", in, contract.RouteChangedRoute, pol)
				}
			}
		}
	}
}
