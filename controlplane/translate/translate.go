// Package translate turns a directpipe policy into Envoy xDS resources.
//
// Translate is a pure function: the same policy and options always yield the
// same resources in the same order, so content-hash versions are stable and a
// restarted control plane re-sends exactly what Envoy already runs.
package translate

import (
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// Options are the deployment facts that are not part of policy.
type Options struct {
	// WasmPath is the handshake module's path as Envoy sees it.
	WasmPath string
	// TCPWasmPath is the tcp handshake module's path as Envoy sees it;
	// only policies with auth on a tcp route need it.
	TCPWasmPath string
	// ResolvedKeys are the verification keys the control plane read from
	// each auth policy's jwks_file or jwks_url, by policy name. Reading them
	// is I/O, so it happens before translation, not in it.
	ResolvedKeys map[string][]*policyv1.JWK
}

// Resources are the Envoy resources for one policy, each list sorted by name.
type Resources struct {
	Listeners        []types.Resource
	Routes           []types.Resource
	Clusters         []types.Resource
	Endpoints        []types.Resource
	ExtensionConfigs []types.Resource
}

// validator is implemented by every generated Envoy message.
type validator interface{ ValidateAll() error }

// Translate builds the Envoy resources for a validated policy. Every resource
// passes its generated ValidateAll before it is returned, so what the caller
// serves is never something Envoy would reject on schema grounds.
func Translate(p *policyv1.Policy, opts Options) (*Resources, error) {
	if opts.WasmPath == "" {
		return nil, fmt.Errorf("translate: the handshake module path is required")
	}
	out := &Resources{}
	backends := map[string]*policyv1.Backend{}
	for _, b := range p.GetBackends() {
		backends[b.GetName()] = b
		out.Clusters = append(out.Clusters, cluster(b))
		out.Endpoints = append(out.Endpoints, loadAssignment(b))
	}
	for _, l := range p.GetListeners() {
		out.Listeners = append(out.Listeners, listener(l))
		out.Routes = append(out.Routes, routeConfig(l.GetName(), routesOf(p, l.GetName()), backends))
	}
	for _, r := range p.GetRoutes() {
		switch {
		case isTCP(r):
			out.Listeners = append(out.Listeners, tcpListener(r))
		case r.GetMaxConnections() > 0:
			out.Clusters = append(out.Clusters, limitedCluster(r, backends[r.GetBackend()]))
		}
	}
	ecds, err := HandshakeConfig(p, opts)
	if err != nil {
		return nil, err
	}
	out.ExtensionConfigs = append(out.ExtensionConfigs, ecds)
	tcpECDS, err := TCPHandshakeConfigs(p, opts)
	if err != nil {
		return nil, err
	}
	for _, c := range tcpECDS {
		out.ExtensionConfigs = append(out.ExtensionConfigs, c)
	}
	// A tcp route that checks handshakes needs somewhere to send denials.
	if len(tcpECDS) > 0 {
		out.Listeners = append(out.Listeners, denyListener())
		out.Clusters = append(out.Clusters, denyCluster())
	}

	for _, list := range out.all() {
		slices.SortStableFunc(*list, func(a, b types.Resource) int { return compare(name(a), name(b)) })
		for _, r := range *list {
			if err := r.(validator).ValidateAll(); err != nil {
				return nil, fmt.Errorf("translate: %T %q is invalid: %w", r, name(r), err)
			}
		}
	}
	return out, nil
}

func (r *Resources) all() []*[]types.Resource {
	return []*[]types.Resource{&r.Listeners, &r.Routes, &r.Clusters, &r.Endpoints, &r.ExtensionConfigs}
}

// routesOf lists the routes served by a listener, in policy order: Envoy
// matches routes first to last, so their order is the operator's to choose.
func routesOf(p *policyv1.Policy, listener string) []*policyv1.Route {
	var out []*policyv1.Route
	for _, r := range p.GetRoutes() {
		if isTCP(r) {
			continue // carried by its own listener
		}
		if r.GetListener() == listener || (r.GetListener() == "" && len(p.GetListeners()) == 1) {
			out = append(out, r)
		}
	}
	return out
}

func isTCP(r *policyv1.Route) bool {
	return r.GetKind() == policy.KindWebSocket && r.GetMode() == policy.ModeTCP
}

func name(r types.Resource) string {
	if n, ok := r.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	if c, ok := r.(interface{ GetClusterName() string }); ok {
		return c.GetClusterName()
	}
	return ""
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// clone keeps shared messages from being aliased between resources.
func clone[M proto.Message](m M) M { return proto.Clone(m).(M) }
