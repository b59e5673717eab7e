// Package xdstype names, once, the xDS resource types directpipe serves:
// translate produces them, xds serves them, the admin API and dpctl show
// them. It imports no Envoy API, so the CLI that reads it stays small.
package xdstype

import (
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// Resources are the Envoy resources of one snapshot keyed by type URL (a
// go-control-plane resource.Type), each list sorted by name: the shape
// go-control-plane's cachev3.NewSnapshot takes. A type with no resources
// may be missing; it is served as an empty list.
type Resources map[string][]types.Resource

// Clone returns a copy whose lists can be replaced or re-sliced without
// touching r's; the resources themselves are shared.
func (r Resources) Clone() Resources {
	out := make(Resources, len(r))
	for t, list := range r {
		out[t] = append([]types.Resource(nil), list...)
	}
	return out
}

// Kind is one served type.
type Kind struct {
	// URL is the type URL, equal to go-control-plane's resource constant
	// (resource.ClusterType, ...).
	URL string
	// Abbrev is the discovery service's name, e.g. "CDS".
	Abbrev string
}

// Name is the type's message name, e.g. "Cluster": what the admin API and
// the apply diff call it.
func (k Kind) Name() string { return Name(k.URL) }

const prefix = "type.googleapis.com/"

// Kinds returns the served types in the order operators read them: clusters
// and their endpoints, listeners and their routes, then the filter configs.
func Kinds() []Kind {
	return []Kind{
		{prefix + "envoy.config.cluster.v3.Cluster", "CDS"},
		{prefix + "envoy.config.endpoint.v3.ClusterLoadAssignment", "EDS"},
		{prefix + "envoy.config.listener.v3.Listener", "LDS"},
		{prefix + "envoy.config.route.v3.RouteConfiguration", "RDS"},
		{prefix + "envoy.config.core.v3.TypedExtensionConfig", "ECDS"},
	}
}

// Name turns any type URL into its message name, e.g. "Listener".
func Name(typeURL string) string {
	return typeURL[strings.LastIndex(typeURL, ".")+1:]
}
