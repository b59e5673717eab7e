package audit

import (
	"fmt"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// dump holds the decoded sections of a config dump.
type dump struct {
	bootstrap *adminv3.BootstrapConfigDump
	listeners *adminv3.ListenersConfigDump
	routes    []*adminv3.RoutesConfigDump
	clusters  *adminv3.ClustersConfigDump
	ecds      []*adminv3.EcdsConfigDump
	scoped    *adminv3.ScopedRoutesConfigDump
}

// located is a resource and its path in the dump.
type located struct {
	msg  proto.Message
	path string
}

// index finds route configurations, clusters and ECDS filter configs by
// name, for the listeners that refer to them.
func (a *auditor) index() {
	a.routeConfigs, a.clusters, a.ecds = map[string]located{}, map[string]located{}, map[string]located{}
	for _, rd := range a.d.routes {
		for _, s := range rd.GetStaticRouteConfigs() {
			if rc, ok := unpack(s.GetRouteConfig(), &routev3.RouteConfiguration{}); ok {
				a.routeConfigs[rc.GetName()] = located{rc, fmt.Sprintf("static_route_configs[%s].route_config", rc.GetName())}
			}
		}
		for _, s := range rd.GetDynamicRouteConfigs() {
			if rc, ok := unpack(s.GetRouteConfig(), &routev3.RouteConfiguration{}); ok {
				a.routeConfigs[rc.GetName()] = located{rc, fmt.Sprintf("dynamic_route_configs[%s].route_config", rc.GetName())}
			}
		}
	}
	for _, s := range a.d.clusters.GetStaticClusters() {
		if c, ok := unpack(s.GetCluster(), &clusterv3.Cluster{}); ok {
			a.clusters[c.GetName()] = located{c, fmt.Sprintf("static_clusters[%s].cluster", c.GetName())}
		}
	}
	for _, s := range a.d.clusters.GetDynamicActiveClusters() {
		if c, ok := unpack(s.GetCluster(), &clusterv3.Cluster{}); ok {
			a.clusters[c.GetName()] = located{c, fmt.Sprintf("dynamic_active_clusters[%s].cluster", c.GetName())}
		}
	}
	for _, e := range a.d.ecds {
		for _, f := range e.GetEcdsFilters() {
			if tc, ok := unpack(f.GetEcdsFilter(), &corev3.TypedExtensionConfig{}); ok {
				a.ecds[tc.GetName()] = located{tc, fmt.Sprintf("ecds_filters[%s].ecds_filter", tc.GetName())}
			}
		}
	}
}

// listenerAt is one listener as the audit walks it.
type listenerAt struct {
	l    *listenerv3.Listener
	path string
	lds  bool // delivered by LDS, so an update drains it
}

func (a *auditor) listeners() {
	if a.d.listeners == nil {
		a.note("the config dump has no listeners section")
		return
	}
	for _, s := range a.d.listeners.GetStaticListeners() {
		if l, ok := unpack(s.GetListener(), &listenerv3.Listener{}); ok {
			a.listener(listenerAt{l, fmt.Sprintf("static_listeners[%s].listener", l.GetName()), false})
		}
	}
	for _, d := range a.d.listeners.GetDynamicListeners() {
		if l, ok := unpack(d.GetActiveState().GetListener(), &listenerv3.Listener{}); ok {
			a.listener(listenerAt{l, fmt.Sprintf("dynamic_listeners[%s].active_state.listener", d.GetName()), true})
		}
		if d.GetDrainingState() != nil {
			a.add(Finding{
				Severity: High, Check: "listener-draining",
				Path:  fmt.Sprintf("dynamic_listeners[%s].draining_state", d.GetName()),
				Found: fmt.Sprintf("an older version of listener %s is draining now", d.GetName()),
				Why:   "a listener update drains every connection of the old listener; upgraded connections cannot be drained gracefully and are cut when the drain time ends",
				Fix:   "change the listener only in a maintenance window; deliver routes by RDS, back ends by CDS/EDS and filter config by ECDS so that pushes leave the listener alone",
			})
		}
	}
	// An update that changes only filter chains drains those chains in
	// place: the dump shows no draining_state, the stats count them.
	if n := a.stats["listener_manager.total_filter_chains_draining"]; n > 0 {
		a.add(Finding{
			Severity: High, Check: "listener-draining",
			Path:  "stats:listener_manager.total_filter_chains_draining",
			Found: fmt.Sprintf("%d filter chains of updated listeners are draining now", n),
			Why:   "a listener update that changes only filter chains drains the connections of the old chains; upgraded connections cannot be drained gracefully and are cut when the drain time ends",
			Fix:   "deliver routes by RDS, back ends by CDS/EDS and filter config by ECDS so that pushes leave the listener's filter chains alone",
		})
	}
}

func (a *auditor) listener(at listenerAt) {
	chains := at.l.GetFilterChains()
	paths := make([]string, len(chains))
	for i := range chains {
		paths[i] = fmt.Sprintf("%s.filter_chains[%d]", at.path, i)
	}
	if dc := at.l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains, dc)
		paths = append(paths, at.path+".default_filter_chain")
	}
	var streams []*Stream
	for i, fc := range chains {
		for j, f := range fc.GetFilters() {
			fpath := fmt.Sprintf("%s.filters[%d]", paths[i], j)
			if hcm, ok := unpack(f.GetTypedConfig(), &hcmv3.HttpConnectionManager{}); ok {
				streams = append(streams, a.hcm(at, hcm, fpath)...)
			}
			if tp, ok := unpack(f.GetTypedConfig(), &tcpproxyv3.TcpProxy{}); ok {
				streams = append(streams, a.tcpProxy(at, tp, fpath, fc.GetFilters()[:j], paths[i]))
			}
		}
	}
	if len(streams) == 0 {
		return
	}
	a.listenerChecks(at, streams)
}

// hcm walks the routes of one HTTP connection manager and returns the
// routes that carry WebSockets.
func (a *auditor) hcm(at listenerAt, hcm *hcmv3.HttpConnectionManager, path string) []*Stream {
	tc := path + ".typed_config"
	var ws *hcmv3.HttpConnectionManager_UpgradeConfig
	wsPath := ""
	for i, u := range hcm.GetUpgradeConfigs() {
		if strings.EqualFold(u.GetUpgradeType(), "websocket") {
			ws, wsPath = u, fmt.Sprintf("%s.upgrade_configs[%d]", tc, i)
		}
	}
	chain := hcm.GetHttpFilters()
	chainPath := tc + ".http_filters"
	if len(ws.GetFilters()) > 0 {
		chain, chainPath = ws.GetFilters(), wsPath+".filters"
	}
	var rc *routev3.RouteConfiguration
	rcPath := ""
	switch {
	case hcm.GetRouteConfig() != nil:
		rc, rcPath = hcm.GetRouteConfig(), tc+".route_config"
	case hcm.GetRds() != nil:
		name := hcm.GetRds().GetRouteConfigName()
		loc, ok := a.routeConfigs[name]
		if !ok {
			a.note("%s: route configuration %q is not in the dump (not received yet?)", tc, name)
			return nil
		}
		rc, rcPath = loc.msg.(*routev3.RouteConfiguration), loc.path
	default:
		if ws != nil {
			a.note("%s: scoped routes are not audited", tc)
		}
		return nil
	}
	var streams []*Stream
	for v, vh := range rc.GetVirtualHosts() {
		for r, route := range vh.GetRoutes() {
			action := route.GetRoute()
			if action == nil {
				continue
			}
			rpath := fmt.Sprintf("%s.virtual_hosts[%d].routes[%d]", rcPath, v, r)
			var rws *routev3.RouteAction_UpgradeConfig
			for _, u := range action.GetUpgradeConfigs() {
				if strings.EqualFold(u.GetUpgradeType(), "websocket") {
					rws = u
				}
			}
			// A route's own upgrade_config overrides the connection
			// manager's either way; enabled on a route alone, the upgrade
			// runs the connection manager's http_filters (shown on Envoy
			// 1.40: such a route upgraded).
			enabled := ws != nil && (ws.GetEnabled() == nil || ws.GetEnabled().GetValue())
			upath := wsPath
			if rws != nil {
				enabled = rws.GetEnabled() == nil || rws.GetEnabled().GetValue()
				if ws == nil {
					upath = rpath + ".route.upgrade_configs"
				}
			}
			if !enabled {
				if ws == nil && rws == nil && matchesUpgrade(route.GetMatch()) {
					a.add(Finding{
						Severity: High, Check: "upgrade-not-enabled", Path: rpath,
						Found: fmt.Sprintf("route %s is meant for WebSockets, but its connection manager has no websocket upgrade_config", describeRoute(vh, route)),
						Why:   "without the upgrade type on the HTTP connection manager, Envoy refuses every WebSocket upgrade (403), whatever the route says",
						Fix:   "add upgrade_configs: [{upgrade_type: websocket}] to the HTTP connection manager, ideally with its own filters: list (the check and the router)",
					})
				}
				continue
			}
			s := a.newStream(&Stream{
				Listener: at.l.GetName(), Kind: "websocket", Route: describeRoute(vh, route), Path: rpath,
				Cluster: routeCluster(action),
			})
			for _, f := range chain {
				if !f.GetDisabled() {
					s.Chain = append(s.Chain, shortFilterName(f.GetName()))
				}
			}
			a.httpStream(s, httpStreamAt{
				hcm: hcm, hcmPath: tc, ws: ws, wsPath: upath, chain: chain, chainPath: chainPath,
				vh: vh, route: route, routePath: rpath, inlineRoutes: at.lds && hcm.GetRouteConfig() != nil,
			})
			streams = append(streams, s)
		}
	}
	return streams
}

// matchesUpgrade reports whether a route matches only upgrade requests.
func matchesUpgrade(m *routev3.RouteMatch) bool {
	for _, h := range m.GetHeaders() {
		if strings.EqualFold(h.GetName(), "upgrade") {
			return true
		}
	}
	return false
}

func describeRoute(vh *routev3.VirtualHost, r *routev3.Route) string {
	m := r.GetMatch()
	var match string
	switch {
	case m.GetPath() != "":
		match = "path " + m.GetPath()
	case m.GetPrefix() != "":
		match = "prefix " + m.GetPrefix()
	case m.GetSafeRegex() != nil:
		match = "regex " + m.GetSafeRegex().GetRegex()
	case m.GetPathSeparatedPrefix() != "":
		match = "prefix " + m.GetPathSeparatedPrefix()
	case m.GetConnectMatcher() != nil:
		match = "CONNECT"
	default:
		match = "any path"
	}
	out := fmt.Sprintf("vhost %s, %s", vh.GetName(), match)
	if r.GetName() != "" {
		out = fmt.Sprintf("%s (%s)", r.GetName(), out)
	}
	return out
}

func routeCluster(action *routev3.RouteAction) string {
	switch {
	case action.GetCluster() != "":
		return action.GetCluster()
	case action.GetWeightedClusters() != nil:
		var names []string
		for _, c := range action.GetWeightedClusters().GetClusters() {
			names = append(names, c.GetName())
		}
		return strings.Join(names, ",")
	case action.GetClusterHeader() != "":
		return "(header " + action.GetClusterHeader() + ")"
	}
	return ""
}

func shortFilterName(n string) string {
	return strings.TrimPrefix(strings.TrimPrefix(n, "envoy.filters.http."), "envoy.filters.network.")
}

// tcpProxy records one tcp_proxy as a stream and checks it with the
// network filters before it.
func (a *auditor) tcpProxy(at listenerAt, tp *tcpproxyv3.TcpProxy, path string, before []*listenerv3.Filter, chainPath string) *Stream {
	cluster := tp.GetCluster()
	if wc := tp.GetWeightedClusters(); wc != nil {
		var names []string
		for _, c := range wc.GetClusters() {
			names = append(names, c.GetName())
		}
		cluster = strings.Join(names, ",")
	}
	s := a.newStream(&Stream{Listener: at.l.GetName(), Kind: "tcp", Route: "tcp_proxy " + tp.GetStatPrefix(), Path: path, Cluster: cluster})
	for _, f := range before {
		s.Chain = append(s.Chain, shortFilterName(f.GetName()))
	}
	s.Chain = append(s.Chain, shortFilterName("envoy.filters.network.tcp_proxy"))
	a.tcpChecks(s, tp, path+".typed_config")
	for i, f := range before {
		a.networkFilter(s, f, fmt.Sprintf("%s.filters[%d]", chainPath, i))
	}
	if tp.GetCluster() != "" {
		a.cluster(s, tp.GetCluster(), false)
	}
	for _, c := range tp.GetWeightedClusters().GetClusters() {
		a.cluster(s, c.GetName(), false)
	}
	return s
}

// filterConfig is a filter's typed config, from the filter or from ECDS.
func (a *auditor) filterConfig(name string, typed *anypb.Any, discovery *corev3.ExtensionConfigSource, path string) (*anypb.Any, string) {
	if typed != nil {
		return typed, path + ".typed_config"
	}
	if discovery != nil {
		if loc, ok := a.ecds[name]; ok {
			return loc.msg.(*corev3.TypedExtensionConfig).GetTypedConfig(), loc.path + ".typed_config"
		}
		a.note("%s: filter %s comes by ECDS and is not in the dump", path, name)
	}
	return nil, path
}
