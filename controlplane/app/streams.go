package app

import (
	"cmp"
	"context"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/streams"
	"github.com/directpipe/directpipe/controlplane/translate"
)

// Streams returns the live streams the Envoys' load reports count, on the
// back ends the served policy names (Envoy also reports its bootstrap's
// own clusters, such as the one to this control plane).
func (a *App) Streams(context.Context) ([]*adminv1.EndpointStreams, []string, error) {
	p, _ := a.Policy()
	backends := map[string]bool{}
	for _, b := range p.GetBackends() {
		backends[b.GetName()] = true
	}
	var out []*adminv1.EndpointStreams
	counts, nodes := a.fleetCounts()
	for _, c := range counts {
		if !backends[c.Backend] {
			continue
		}
		out = append(out, &adminv1.EndpointStreams{Backend: c.Backend, Route: c.Route, Endpoint: c.Endpoint, Node: c.Node, Live: c.Live})
	}
	return out, nodes, nil
}

// topNodes is how many nodes /metrics names; the rest add up under
// node="other", so that a fleet of thousands of Envoys stays a few series.
const topNodes = 20

// streamsCollector puts the counts on /metrics with bounded labels: one
// series per endpoint the served policy lists (the policy is bounded), and
// per node for the busiest few.
type streamsCollector struct {
	a                         *App
	endpoint, node, reporting *prometheus.Desc
	drains                    *prometheus.Desc
	weight                    *prometheus.Desc
}

func newStreamsCollector(a *App) *streamsCollector {
	return &streamsCollector{
		a: a,
		endpoint: prometheus.NewDesc("directpipe_streams_live",
			"Live streams on each endpoint the policy lists, over every Envoy that reports load (a route with a cluster of its own counts under its back end).",
			[]string{"backend", "endpoint"}, nil),
		node: prometheus.NewDesc("directpipe_streams_node_live",
			"Live streams each Envoy holds, for the busiest Envoys; the rest add up under node=\"other\".",
			[]string{"node"}, nil),
		reporting: prometheus.NewDesc("directpipe_streams_reporting_nodes",
			"Envoys whose recent load reports the stream counts add up.", nil, nil),
		drains: prometheus.NewDesc("directpipe_drains",
			"Endpoint drains held, by state (draining: in EDS as DRAINING; drained: out of EDS).", []string{"state"}, nil),
		weight: prometheus.NewDesc("directpipe_streams_weight",
			"The EDS weight served to each endpoint of a least_streams back end that takes new streams (1 to 1000): its share of the next streams.",
			[]string{"backend", "endpoint"}, nil),
	}
}

func (c *streamsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.endpoint
	ch <- c.node
	ch <- c.reporting
	ch <- c.drains
	ch <- c.weight
}

func (c *streamsCollector) Collect(ch chan<- prometheus.Metric) {
	counts, reporting := c.a.fleetCounts()
	p, _ := c.a.Policy()
	live, batches := c.a.weighing.current()
	drains := c.a.drains.phases()
	for _, b := range p.GetBackends() {
		for _, ep := range b.GetEndpoints() {
			ch <- prometheus.MustNewConstMetric(c.endpoint, prometheus.GaugeValue, float64(streams.Live(counts, b.GetName(), ep)), b.GetName(), ep)
		}
		for ep, w := range translate.StreamWeights(b, live[b.GetName()], drains[b.GetName()], batches[b.GetName()]) {
			ch <- prometheus.MustNewConstMetric(c.weight, prometheus.GaugeValue, float64(w), b.GetName(), ep)
		}
	}
	byNode := map[string]uint64{}
	for _, n := range reporting {
		byNode[n] = 0
	}
	for _, cnt := range counts {
		byNode[cnt.Node] += cnt.Live
	}
	type nodeLive struct {
		node string
		live uint64
	}
	var nodes []nodeLive
	for n, l := range byNode {
		nodes = append(nodes, nodeLive{n, l})
	}
	slices.SortFunc(nodes, func(x, y nodeLive) int { return cmp.Or(cmp.Compare(y.live, x.live), cmp.Compare(x.node, y.node)) })
	var other uint64
	for i, n := range nodes {
		if i < topNodes {
			ch <- prometheus.MustNewConstMetric(c.node, prometheus.GaugeValue, float64(n.live), n.node)
		} else {
			other += n.live
		}
	}
	if len(nodes) > topNodes {
		ch <- prometheus.MustNewConstMetric(c.node, prometheus.GaugeValue, float64(other), "other")
	}
	ch <- prometheus.MustNewConstMetric(c.reporting, prometheus.GaugeValue, float64(len(byNode)))
	states := map[adminv1.DrainState]int{}
	for _, d := range c.a.Drains() {
		states[d.GetState()]++
	}
	ch <- prometheus.MustNewConstMetric(c.drains, prometheus.GaugeValue, float64(states[adminv1.DrainState_DRAINING]), "draining")
	ch <- prometheus.MustNewConstMetric(c.drains, prometheus.GaugeValue, float64(states[adminv1.DrainState_DRAINED]), "drained")
}

// LoadReports is the store of this replica's load reports.
func (a *App) LoadReports() *streams.Store { return a.streams }
