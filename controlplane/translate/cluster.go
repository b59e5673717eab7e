package translate

import (
	"net"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
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
	return &clusterv3.Cluster{
		Name:                 b.GetName(),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       timeout,
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
	}
}

func loadAssignment(b *policyv1.Backend) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, ep := range b.GetEndpoints() {
		host, portStr, _ := net.SplitHostPort(ep) // validated by policy
		port, _ := strconv.ParseUint(portStr, 10, 32)
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{
					Address:       host,
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
				},
			}}},
		}})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: b.GetName(),
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}},
	}
}
