package translate

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/balance"
	"github.com/directpipe/directpipe/controlplane/policy"
)

const (
	// DefaultSlowStart is how long a new endpoint of a least_streams back
	// end takes to get its full share of new streams.
	DefaultSlowStart = 5 * time.Second
	// fullScanPools is the largest pool Envoy scans whole for the endpoint
	// with the fewest streams; a larger one picks the better of two at
	// random, whose cost does not grow with the pool.
	fullScanPools = 16
)

// leastStreamsPolicy is Envoy's least-request balancer as least_streams
// uses it. The EDS weights carry the fleet-wide picture (StreamWeights), so
// the active request bias is 0: with unequal weights Envoy then follows
// them as they are, instead of dividing them again by the streams this one
// Envoy holds, which the weights already count. With equal weights (an
// even pool) Envoy picks the endpoint where it holds fewest streams
// itself: by a full scan for small pools, where two random choices would
// often miss the emptiest. Slow start ramps a new endpoint's weight up.
func leastStreamsPolicy(b *policyv1.Backend) *clusterv3.LoadBalancingPolicy {
	lr := &leastrequestv3.LeastRequest{
		ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: 0, RuntimeKey: "directpipe.least_streams.active_request_bias"},
	}
	if len(b.GetEndpoints()) <= fullScanPools {
		lr.SelectionMethod = leastrequestv3.LeastRequest_FULL_SCAN
	}
	if window := durationOr(b.GetSlowStart(), DefaultSlowStart); window.AsDuration() > 0 {
		lr.SlowStartConfig = &commonv3.SlowStartConfig{SlowStartWindow: window}
	}
	return &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
		TypedExtensionConfig: &corev3.TypedExtensionConfig{
			Name:        "envoy.load_balancing_policies.least_request",
			TypedConfig: mustAny(lr),
		},
	}}}
}

// StreamWeights are the EDS weights of a least_streams back end's
// endpoints that take new streams, from the live streams each holds over
// the fleet (live, by endpoint as the policy lists it) and its capacity.
// Endpoints draining or drained get none. batch is the streams a
// rebalance has asked to reconnect (0: none). nil for other back ends.
func StreamWeights(b *policyv1.Backend, live map[string]uint64, drains map[string]DrainPhase, batch int) map[string]uint32 {
	if b.GetLb() != policy.LBLeastStreams {
		return nil
	}
	draining := map[string]bool{}
	for _, ep := range b.GetDrainingEndpoints() {
		draining[ep] = true
	}
	var eps []balance.Endpoint
	for _, ep := range b.GetEndpoints() {
		if draining[ep] || drains[ep] != 0 {
			continue
		}
		eps = append(eps, balance.Endpoint{Address: ep, Live: int(min(live[ep], 1<<31-1)), MaxStreams: EndpointCapacity(b, ep)})
	}
	out := make(map[string]uint32, len(eps))
	for i, w := range balance.WeightsFor(eps, batch) {
		out[eps[i].Address] = w
	}
	return out
}

// EndpointCapacity is an endpoint's stated max_streams; 0 when none is.
func EndpointCapacity(b *policyv1.Backend, endpoint string) int {
	if n, ok := b.GetEndpointMaxStreams()[endpoint]; ok {
		return int(n)
	}
	return int(b.GetMaxStreams())
}
