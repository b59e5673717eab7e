package translate

import (
	"fmt"
	"net"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/contract"
)

// TCPListenerPrefix names the dedicated listener of a tcp mode route.
const TCPListenerPrefix = "tcp-"

// tcpListener is the literal direct pipe: a listener whose network filters
// are the handshake check and tcp_proxy (tcp_proxy alone for a raw route).
func tcpListener(r *policyv1.Route, kind FilterKind) (*listenerv3.Listener, error) {
	addr, err := socketAddress(r.GetTcp().GetAddress())
	if err != nil {
		return nil, fmt.Errorf("translate: tcp route %q: %w", r.GetName(), err)
	}
	return &listenerv3.Listener{
		Name:    TCPListenerPrefix + r.GetName(),
		Address: addr,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: tcpFilters(r, kind),
		}},
	}, nil
}

// tcpFilters is the tcp route's network filter chain.
func tcpFilters(r *policyv1.Route, kind FilterKind) []*listenerv3.Filter {
	idle := DefaultWebSocketIdleTimeout
	if d := r.GetIdleTimeout(); d != nil {
		idle = d.AsDuration()
	}
	proxy := &tcpproxyv3.TcpProxy{
		StatPrefix:       r.GetName(),
		ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: r.GetBackend()},
		IdleTimeout:      durationpb.New(idle),
	}
	if d := r.GetMaxStreamDuration(); d != nil {
		proxy.MaxDownstreamConnectionDuration = clone(d)
	}
	var filters []*listenerv3.Filter
	if tcpChecked(r) {
		filters = append(filters, tcpHandshakeFilter(r, kind))
		// tcp_proxy must neither connect nor stop reading before the
		// handshake is decided: the check needs the first bytes, and a
		// denial picks another cluster (see filter/tcpcheck).
		proxy.UpstreamConnectMode = tcpproxyv3.UpstreamConnectMode_ON_DOWNSTREAM_DATA
		proxy.MaxEarlyDataBytes = wrapperspb.UInt32(2 * contract.MaxHeadBytes)
	}
	return append(filters, &listenerv3.Filter{
		Name:       "envoy.filters.network.tcp_proxy",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(proxy)},
	})
}

// tcpChecked reports whether a tcp route runs the handshake module: every
// one but a raw route. Without auth the module still checks that the
// connection opens with a WebSocket handshake and removes the identity
// headers a client wrote.
func tcpChecked(r *policyv1.Route) bool { return !r.GetTcp().GetRaw() }

// socketAddress turns an ip:port into an Envoy address. Validation has
// checked it already; translate still refuses what it cannot parse rather
// than serve port 0 to Envoy.
func socketAddress(addr string) (*corev3.Address, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("address %q: port: %w", addr, err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
	}}}, nil
}
