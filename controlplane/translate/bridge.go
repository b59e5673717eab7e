package translate

import (
	"errors"
	"maps"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// Served is a policy as a control plane serves it.
type Served struct {
	Policy *policyv1.Policy
	// Keys are the key sets Policy's auth policies resolved to, by name.
	Keys map[string][]*policyv1.JWK
	// Resources are Policy translated with Keys.
	Resources xdstype.Resources
}

// Bridge returns what to serve for a moment before next replaces prev:
// prev's resources with the HTTP handshake filter's config widened to the
// routes and auth policies of both. go-control-plane sends routes before
// extension configs, so without it a new route would reach Envoy before its
// auth setting and be refused (fail closed); with it the filter config is a
// superset at every step: make before break. Removals need no bridge: next
// removes the route first and its auth setting after.
//
// opts are the options next is translated with; for an auth policy both
// name, next's version and keys win. Bridge returns nil when there is
// nothing to push first: nothing served yet, or the served filter config
// already says it all. Only the HTTP filter's config is bridged: a tcp
// route's filter config arrives with its listener, which waits for it.
func Bridge(prev Served, next *policyv1.Policy, opts Options) (xdstype.Resources, error) {
	if prev.Policy == nil || prev.Resources == nil {
		return nil, nil
	}
	merged := &policyv1.Policy{
		Routes:       unionByName(next.GetRoutes(), prev.Policy.GetRoutes()),
		AuthPolicies: unionByName(next.GetAuthPolicies(), prev.Policy.GetAuthPolicies()),
	}
	keys := maps.Clone(prev.Keys)
	if keys == nil {
		keys = map[string][]*policyv1.JWK{}
	}
	maps.Copy(keys, opts.ResolvedKeys)
	opts.ResolvedKeys = keys
	ecds, err := HandshakeConfig(merged, opts)
	if err != nil {
		return nil, err
	}
	staged := prev.Resources.Clone()
	configs := staged[resource.ExtensionConfigType]
	i := slices.IndexFunc(configs, func(r types.Resource) bool { return name(r) == HandshakeFilterName })
	if i < 0 {
		return nil, errors.New("translate: bridge: the served resources have no handshake filter config")
	}
	if proto.Equal(ecds, configs[i]) {
		return nil, nil
	}
	configs[i] = ecds
	return staged, nil
}

// unionByName is next followed by the items of prev whose names next lacks.
func unionByName[T interface{ GetName() string }](next, prev []T) []T {
	out := slices.Clone(next)
	seen := map[string]bool{}
	for _, x := range next {
		seen[x.GetName()] = true
	}
	for _, x := range prev {
		if !seen[x.GetName()] {
			out = append(out, x)
		}
	}
	return out
}
