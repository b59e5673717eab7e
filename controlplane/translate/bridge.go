package translate

import (
	"errors"
	"maps"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

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
// prev's resources with the HTTP handshake filter's config widened by the
// auth policies next adds. Routes name their policy in their own metadata
// (tagAuth), so a route and its setting arrive together; what can still
// arrive early is a route naming a policy that is new in next, since
// go-control-plane sends routes before extension configs. The filter
// refuses such a route until its policy arrives (fail closed); with the
// bridge the policy is there first: make before break. Removals need no
// bridge: next removes the route first and its policy after.
//
// Policies prev already serves keep prev's version in the bridge: next's
// changes to them come with next itself, in one push. opts are the
// options next is translated with. Bridge returns nil when there is
// nothing to push first: nothing served yet, or no new policy.
func Bridge(prev Served, next *policyv1.Policy, opts Options) (xdstype.Resources, error) {
	if prev.Policy == nil || prev.Resources == nil {
		return nil, nil
	}
	merged := &policyv1.Policy{AuthPolicies: unionByName(prev.Policy.GetAuthPolicies(), next.GetAuthPolicies())}
	if len(merged.AuthPolicies) == len(prev.Policy.GetAuthPolicies()) {
		return nil, nil
	}
	keys := maps.Clone(opts.ResolvedKeys)
	if keys == nil {
		keys = map[string][]*policyv1.JWK{}
	}
	maps.Copy(keys, prev.Keys)
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
	configs[i] = ecds
	return staged, nil
}

// unionByName is first followed by the items of second whose names first
// lacks.
func unionByName[T interface{ GetName() string }](first, second []T) []T {
	out := slices.Clone(first)
	seen := map[string]bool{}
	for _, x := range first {
		seen[x.GetName()] = true
	}
	for _, x := range second {
		if !seen[x.GetName()] {
			out = append(out, x)
		}
	}
	return out
}
