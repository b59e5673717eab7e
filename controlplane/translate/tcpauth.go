package translate

import (
	"fmt"
	"slices"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	wasmnetworkv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/wasm/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/contract"
)

const (
	// TCPHandshakeFilterPrefix names a tcp route's handshake network
	// filter, its ECDS resource and its plugin's root id: the prefix and
	// the route name. The module tells a tcp plugin from an HTTP one by it.
	TCPHandshakeFilterPrefix = contract.TCPRootIDPrefix
	wasmNetworkTypeURL       = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
	nativeNetworkTypeURL     = "type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter"
)

// tcpHandshakeFilter is the network filter in front of tcp_proxy: the
// Wasm module's, or the dynamic module's for a native node. Its config
// comes by ECDS, like the HTTP filter's, so a key rotation or a policy
// edit never touches the listener; until it has one, Envoy closes the
// listener's connections (fail closed), and a config of the other kind is
// refused.
func tcpHandshakeFilter(r *policyv1.Route, kind FilterKind) *listenerv3.Filter {
	typeURL := wasmNetworkTypeURL
	if kind == FilterNative {
		typeURL = nativeNetworkTypeURL
	}
	return &listenerv3.Filter{
		Name: TCPHandshakeFilterPrefix + r.GetName(),
		ConfigType: &listenerv3.Filter_ConfigDiscovery{ConfigDiscovery: &corev3.ExtensionConfigSource{
			ConfigSource: adsSource(),
			TypeUrls:     []string{typeURL},
		}},
	}
}

// TCPHandshakeConfigs are the ECDS resources of the checked tcp routes:
// one each, carrying the route's one policy as a bare policy document (a
// public one for a route without auth).
func TCPHandshakeConfigs(p *policyv1.Policy, opts Options) ([]*corev3.TypedExtensionConfig, error) {
	policies := map[string]*policyv1.AuthPolicy{}
	for _, a := range p.GetAuthPolicies() {
		policies[a.GetName()] = a
	}
	protected := protectedHeaders(p)
	var out []*corev3.TypedExtensionConfig
	for _, r := range p.GetRoutes() {
		if !isTCP(r) || !tcpChecked(r) {
			continue
		}
		pol := &contract.Policy{Name: r.GetName(), Realm: contract.DefaultRealm, Public: true}
		if a := policies[r.GetAuth()]; a != nil {
			pol = authPolicy(a, opts.ResolvedKeys[a.GetName()], opts)
		}
		// The module sees this one policy; the headers the others set
		// must not reach the back end from a client either.
		pol.ProtectedHeaders = protected
		pol.Clients = clientLists(r.GetClients())
		enc, err := filterDoc(pol)
		if err != nil {
			return nil, fmt.Errorf("translate: tcp filter config of route %q: %w", r.GetName(), err)
		}
		name := TCPHandshakeFilterPrefix + r.GetName()
		if opts.Filter == FilterNative {
			out = append(out, nativeTCPHandshakeConfig(opts.NativeModule, name, enc))
			continue
		}
		wasm := &wasmnetworkv3.Wasm{Config: pluginConfig(name, opts.Module, enc)}
		out = append(out, &corev3.TypedExtensionConfig{Name: name, TypedConfig: mustAny(wasm)})
	}
	return out, nil
}

// protectedHeaders lists every identity and claim header of every auth
// policy, sorted: no request may carry a client's copy of any of them.
func protectedHeaders(p *policyv1.Policy) []string {
	var out []string
	for _, a := range p.GetAuthPolicies() {
		if h := a.GetIdentityHeader(); h != "" {
			out = append(out, h)
		}
		for _, h := range a.GetClaimHeaders() {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// denyListener answers the tcp module's denials. A network filter cannot
// write to its client, so the module sends a denied connection here,
// through DenyCluster, with a short request naming the reason. This
// internal listener (no socket; reachable only from inside Envoy) answers
// it with the status, JSON body and challenge the HTTP module would send,
// then closes the connection. Its content depends on nothing in the
// policy, so it never changes while Envoy runs.
func denyListener() *listenerv3.Listener {
	var routes []*routev3.Route
	for _, reason := range contract.Reasons() {
		headers := []*corev3.HeaderValueOption{headerValue("content-type", "application/json")}
		if contract.Challenges(reason) {
			// The challenge names the policy's realm; the module sends it
			// in the request, and Envoy copies it into the answer.
			headers = append(headers, headerValue("www-authenticate", "%REQ("+contract.ChallengeHeader+")%"))
		}
		if contract.RetryAfter(reason) {
			headers = append(headers, headerValue("retry-after", strconv.Itoa(contract.RetryAfterSeconds)))
		}
		routes = append(routes, &routev3.Route{
			Name:  "deny-" + reason,
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: contract.DenyPathPrefix + reason}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
				Status: uint32(contract.Status(reason)),
				Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(contract.Body(reason))}},
			}},
			ResponseHeadersToAdd: headers,
		})
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "directpipe_deny",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: contract.DenyListener,
			VirtualHosts: []*routev3.VirtualHost{{
				Name: contract.DenyListener, Domains: []string{"*"}, Routes: routes,
			}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
		// Close as soon as the answer is written: the client gets it
		// and an end of stream, with nothing left to wait for.
		DelayedCloseTimeout: durationpb.New(0),
	}
	return &listenerv3.Listener{
		Name:              contract.DenyListener,
		ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
		}}}},
	}
}

// denyCluster reaches the deny listener.
func denyCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 contract.DenyCluster,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(DefaultConnectTimeout),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: contract.DenyCluster,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{
						EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
							AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: contract.DenyListener},
						},
					}},
				}},
			}}}},
		},
	}
}

func headerValue(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}
