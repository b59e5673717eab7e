// Package translate turns a directpipe policy into Envoy xDS resources.
//
// Translate is a pure function: the same policy and options always yield the
// same resources in the same order, so content-hash versions are stable and a
// restarted control plane re-sends exactly what Envoy already runs.
package translate

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// Options are the deployment facts that are not part of policy.
type Options struct {
	// Module is where Envoy gets the handshake module: one module for the
	// HTTP filter and the tcp mode network filter.
	Module ModuleSource
	// NextModule is a remote module being rolled out, if any: Envoy
	// downloads and compiles it in a warm-up cluster of its own while the
	// handshake filters still name Module, so that when they name it,
	// it is already loaded.
	NextModule ModuleSource
	// Filter is the build of the handshake filter the HTTP listeners run:
	// the Proxy-Wasm module (the zero value) or the Envoy dynamic module.
	// The tcp mode network filters run the Wasm module either way.
	Filter FilterKind
	// NativeModule is where Envoy gets the dynamic module when Filter is
	// FilterNative.
	NativeModule ModuleSource
	// NextNativeModule is a remote dynamic module being rolled out, if
	// any: loaded in a warm-up cluster of its own, as NextModule is.
	NextNativeModule ModuleSource
	// ResolvedKeys are the verification keys the control plane read from
	// each auth policy's jwks_file or jwks_url, by policy name. Reading them
	// is I/O, so it happens before translation, not in it.
	ResolvedKeys map[string][]*policyv1.JWK
	// Drains are the endpoints being drained, by back end and endpoint
	// (host:port as the policy writes it). The control plane decides them
	// (an operator asked, and the live count or the deadline moves the
	// phase on); translation only says so to Envoy, by EDS.
	Drains map[string]map[string]DrainPhase
	// Streams are the live streams each endpoint holds over the fleet, by
	// back end and endpoint (host:port as the policy writes it), for the
	// EDS weights of least_streams back ends. The control plane decides
	// when they change (load reports, rate-limited); translation only
	// weighs them.
	Streams map[string]map[string]uint64
	// Reconnecting are the streams a rebalance has asked to reconnect, by
	// back end, while they do: the batch the weights place.
	Reconnecting map[string]int
	// Envoys is how many Envoys of the fleet share each per-identity
	// quota (those connected to any replica); each gets an even share,
	// rounded up. 0 counts as 1.
	Envoys int
	// QuotaUse is where identities' streams are, for splitting their
	// stream quotas by use; nil splits every quota evenly.
	QuotaUse *QuotaUse
}

// DrainPhase is how far an endpoint's drain has gone.
type DrainPhase int

const (
	// Draining endpoints stay in EDS marked DRAINING: Envoy sends them no
	// new stream, and the streams they hold go on (and are still counted
	// by load reports, which cover only the endpoints EDS names).
	Draining DrainPhase = iota + 1
	// Drained endpoints are left out of EDS: they held no stream any
	// more, or the drain's deadline passed.
	Drained
)

// validator is implemented by every generated Envoy message.
type validator interface{ ValidateAll() error }

// Translate builds the Envoy resources for a validated policy, every served
// type present. Every resource passes its generated ValidateAll before it is
// returned, so what the caller serves is never something Envoy would reject
// on schema grounds.
func Translate(p *policyv1.Policy, opts Options) (xdstype.Resources, error) {
	if err := opts.checkModules(); err != nil {
		return nil, err
	}
	var listeners, routes, clusters, endpoints, extensionConfigs []types.Resource
	backends := map[string]*policyv1.Backend{}
	for _, b := range p.GetBackends() {
		backends[b.GetName()] = b
		drains := opts.Drains[b.GetName()]
		cla, err := loadAssignment(b, drains, StreamWeights(b, opts.Streams[b.GetName()], drains, opts.Reconnecting[b.GetName()]))
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, cluster(b))
		if !isDNS(b) {
			endpoints = append(endpoints, cla)
		}
	}
	for _, l := range p.GetListeners() {
		lis, err := listener(l, opts.Filter)
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, lis)
		routes = append(routes, routeConfig(l, routesOf(p, l.GetName()), backends))
	}
	for _, r := range p.GetRoutes() {
		switch {
		case isTCP(r):
			lis, err := tcpListener(r, opts.Filter)
			if err != nil {
				return nil, err
			}
			listeners = append(listeners, lis)
		case r.GetMaxConnections() > 0:
			clusters = append(clusters, limitedCluster(r, backends[r.GetBackend()]))
		}
	}
	ecds, err := HandshakeConfig(p, opts)
	if err != nil {
		return nil, err
	}
	extensionConfigs = append(extensionConfigs, ecds)
	tcpECDS, err := TCPHandshakeConfigs(p, opts)
	if err != nil {
		return nil, err
	}
	for _, c := range tcpECDS {
		extensionConfigs = append(extensionConfigs, c)
	}
	for _, c := range warmupClusters(opts) {
		clusters = append(clusters, c)
	}
	// A tcp route that checks handshakes with the Wasm module needs
	// somewhere to send denials; the native one answers them itself.
	if len(tcpECDS) > 0 && opts.Filter != FilterNative {
		listeners = append(listeners, denyListener())
		clusters = append(clusters, denyCluster())
	}

	out := xdstype.Resources{
		resource.ListenerType:        listeners,
		resource.RouteType:           routes,
		resource.ClusterType:         clusters,
		resource.EndpointType:        endpoints,
		resource.ExtensionConfigType: extensionConfigs,
	}
	for _, k := range xdstype.Kinds() {
		list := out[k.URL]
		slices.SortStableFunc(list, func(a, b types.Resource) int { return cmp.Compare(name(a), name(b)) })
		for _, r := range list {
			if err := r.(validator).ValidateAll(); err != nil {
				return nil, fmt.Errorf("translate: %T %q is invalid: %w", r, name(r), err)
			}
		}
	}
	return out, nil
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

// clone keeps shared messages from being aliased between resources.
func clone[M proto.Message](m M) M { return proto.Clone(m).(M) }
