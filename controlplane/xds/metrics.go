package xds

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// Metrics are the control plane's Prometheus series about xDS.
type Metrics struct {
	pushes    *prometheus.CounterVec
	acks      *prometheus.CounterVec
	nacks     *prometheus.CounterVec
	nodes     prometheus.Gauge
	Translate prometheus.Histogram
	Applies   *prometheus.CounterVec
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		pushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directpipe_xds_pushes_total", Help: "xDS responses sent, by resource type.",
		}, []string{"type"}),
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directpipe_xds_acks_total", Help: "xDS responses Envoy accepted, by resource type.",
		}, []string{"type"}),
		nacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directpipe_xds_nacks_total", Help: "xDS responses Envoy rejected, by resource type.",
		}, []string{"type"}),
		nodes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "directpipe_xds_connected_nodes", Help: "Envoys connected now.",
		}),
		Translate: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "directpipe_translate_seconds",
			Help:    "Time to translate a policy into Envoy resources.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		Applies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "directpipe_policy_applies_total", Help: "Policy loads by result (ok, invalid, rejected).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.pushes, m.acks, m.nacks, m.nodes, m.Translate, m.Applies)
	}
	return m
}

func (m *Metrics) push(typeURL string) { m.pushes.WithLabelValues(xdstype.Name(typeURL)).Inc() }
func (m *Metrics) ack(typeURL string)  { m.acks.WithLabelValues(xdstype.Name(typeURL)).Inc() }
func (m *Metrics) nack(typeURL string) { m.nacks.WithLabelValues(xdstype.Name(typeURL)).Inc() }
func (m *Metrics) connected(delta int) { m.nodes.Add(float64(delta)) }
