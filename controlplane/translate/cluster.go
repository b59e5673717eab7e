package translate

import (
	"fmt"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	dnscommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/common/dns/v3"
	dnsclusterv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/clusters/dns/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// DefaultConnectTimeout bounds an upstream TCP connect when the policy does
// not say otherwise.
const DefaultConnectTimeout = time.Second

// cluster builds an EDS cluster: endpoints travel separately so that adding
// or removing one does not rebuild the cluster and its connection pools.
func cluster(b *policyv1.Backend) *clusterv3.Cluster {
	timeout := durationpb.New(DefaultConnectTimeout)
	if d := b.GetConnectTimeout(); d != nil {
		timeout = clone(d)
	}
	c := &clusterv3.Cluster{
		Name:           b.GetName(),
		ConnectTimeout: timeout,
		LbPolicy:       clusterv3.Cluster_ROUND_ROBIN,
	}
	if isDNS(b) {
		dnsCluster(c, b)
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
	}
	switch b.GetLb() {
	case policy.LBLeastRequest:
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
	case policy.LBRingHash:
		c.LbPolicy = clusterv3.Cluster_RING_HASH
	case policy.LBLeastStreams:
		c.LoadBalancingPolicy = leastStreamsPolicy(b)
	}
	if hc := b.GetHealthCheck(); hc != nil {
		c.HealthChecks = []*corev3.HealthCheck{healthCheck(hc)}
	}
	if cb := b.GetCircuitBreakers(); cb != nil {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections:     optionalUInt32(cb.GetMaxConnections()),
			MaxPendingRequests: optionalUInt32(cb.GetMaxPendingRequests()),
			MaxRequests:        optionalUInt32(cb.GetMaxRequests()),
		}}}
	}
	if od := b.GetOutlierDetection(); od != nil {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:    optionalUInt32(od.GetConsecutive_5Xx()),
			Interval:           cloneOrNil(od.GetInterval()),
			BaseEjectionTime:   cloneOrNil(od.GetBaseEjectionTime()),
			MaxEjectionPercent: optionalUInt32(od.GetMaxEjectionPercent()),
		}
	}
	if t := b.GetTls(); t != nil {
		c.TransportSocket = &corev3.TransportSocket{
			Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{
				Sni: t.GetSni(),
				CommonTlsContext: &tlsv3.CommonTlsContext{
					ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
						TrustedCa:                 fileSource(t.GetCaFile()),
						MatchTypedSubjectAltNames: upstreamSANs(t),
					}},
				},
			})},
		}
	}
	return c
}

// upstreamSANs are the names the back end's certificate must carry: a CA
// alone would accept any certificate it signed, for any service, so the
// name is always checked too (the policy's san list, else the sni).
func upstreamSANs(t *policyv1.UpstreamTLS) []*tlsv3.SubjectAltNameMatcher {
	names := t.GetSan()
	if len(names) == 0 {
		names = []string{t.GetSni()}
	}
	out := make([]*tlsv3.SubjectAltNameMatcher, 0, len(names))
	for _, n := range names {
		out = append(out, &tlsv3.SubjectAltNameMatcher{
			SanType: tlsv3.SubjectAltNameMatcher_DNS,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: n}},
		})
	}
	return out
}

// RouteClusterSeparator joins back end and route in a per-route cluster.
const RouteClusterSeparator = "~"

// routeCluster is the cluster a route sends to: its own when it has a
// connection limit, the back end's otherwise.
func routeCluster(r *policyv1.Route) string {
	if r.GetMaxConnections() > 0 {
		return r.GetBackend() + RouteClusterSeparator + r.GetName()
	}
	return r.GetBackend()
}

// limitedCluster gives a route with a connection limit a cluster of its
// own: Envoy counts connections and requests per cluster, so a per-route
// limit needs a per-route cluster. It shares the back end's endpoints (EDS
// service name) and settings, and adds the limit as the max_requests
// threshold: every stream, a WebSocket included, is a request, and over the
// limit Envoy answers 503 at once. (A max_connections threshold would queue
// the extra call as pending instead of refusing it.)
func limitedCluster(r *policyv1.Route, b *policyv1.Backend) *clusterv3.Cluster {
	c := cluster(b)
	c.Name = routeCluster(r)
	if c.EdsClusterConfig != nil {
		c.EdsClusterConfig.ServiceName = b.GetName()
	} else {
		c.LoadAssignment.ClusterName = c.Name
	}
	if c.CircuitBreakers == nil {
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{}}}
	}
	c.CircuitBreakers.Thresholds[0].MaxRequests = wrapperspb.UInt32(r.GetMaxConnections())
	return c
}

func healthCheck(hc *policyv1.HealthCheck) *corev3.HealthCheck {
	out := &corev3.HealthCheck{
		Timeout:            durationOr(hc.GetTimeout(), time.Second),
		Interval:           durationOr(hc.GetInterval(), 5*time.Second),
		UnhealthyThreshold: wrapperspb.UInt32(uint32Or(hc.GetUnhealthyThreshold(), 3)),
		HealthyThreshold:   wrapperspb.UInt32(uint32Or(hc.GetHealthyThreshold(), 2)),
		HealthChecker:      &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}},
	}
	if hc.GetPath() != "" {
		out.HealthChecker = &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: hc.GetPath()}}
	}
	return out
}

func durationOr(d *durationpb.Duration, def time.Duration) *durationpb.Duration {
	if d != nil {
		return clone(d)
	}
	return durationpb.New(def)
}

func cloneOrNil(d *durationpb.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return clone(d)
}

func uint32Or(v, def uint32) uint32 {
	if v == 0 {
		return def
	}
	return v
}

func optionalUInt32(v uint32) *wrapperspb.UInt32Value {
	if v == 0 {
		return nil
	}
	return wrapperspb.UInt32(v)
}

// isDNS reports whether a back end names any endpoint by DNS name: then
// Envoy resolves the names itself, and the back end has no EDS resource.
func isDNS(b *policyv1.Backend) bool {
	return slices.ContainsFunc(b.GetEndpoints(), policy.IsDNSEndpoint)
}

// dnsCluster makes c a strict DNS cluster: Envoy resolves every endpoint's
// name each refresh and balances over all the addresses it gets, which is
// what a Kubernetes Service name or a round-robin DNS record needs (a
// logical DNS cluster would use one address at a time). IPv4 is preferred:
// "localhost" and most cluster DNS answer both families, and back ends
// usually listen on IPv4 only. The endpoints travel inside the cluster, so
// a changed endpoint list is a CDS update, never a listener update.
func dnsCluster(c *clusterv3.Cluster, b *policyv1.Backend) {
	refresh := durationOr(b.GetDnsRefresh(), policy.DefaultDNSRefresh)
	c.ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{
		Name: "envoy.cluster.dns",
		TypedConfig: mustAny(&dnsclusterv3.DnsCluster{
			DnsRefreshRate:  refresh,
			DnsLookupFamily: dnscommonv3.DnsLookupFamily_V4_PREFERRED,
		}),
	}}
	// Endpoints were checked by validation; an invalid one cannot reach here.
	cla, _ := loadAssignment(b, nil, nil)
	c.LoadAssignment = cla
}

// loadAssignment lists a back end's endpoints; drains marks those being
// drained DRAINING and leaves out those drained, and weights (least_streams)
// are the endpoints' load-balancing weights. Only EDS changes: a drain or
// a new weight touches no listener and no cluster, so it drains no
// connection itself.
func loadAssignment(b *policyv1.Backend, drains map[string]DrainPhase, weights map[string]uint32) (*endpointv3.ClusterLoadAssignment, error) {
	var lbs []*endpointv3.LbEndpoint
	draining := map[string]bool{}
	for _, ep := range b.GetDrainingEndpoints() {
		draining[ep] = true
	}
	for _, ep := range b.GetEndpoints() {
		addr, err := socketAddress(ep)
		if err != nil {
			return nil, fmt.Errorf("translate: back end %q: %w", b.GetName(), err)
		}
		lb := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: addr},
		}}
		if w, ok := weights[ep]; ok {
			lb.LoadBalancingWeight = wrapperspb.UInt32(w)
		}
		switch {
		case drains[ep] == Drained:
			continue
		case drains[ep] == Draining, draining[ep]:
			lb.HealthStatus = corev3.HealthStatus_DRAINING
		}
		lbs = append(lbs, lb)
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: b.GetName(),
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}, nil
}
