package app

import (
	"cmp"
	"maps"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/nodestats"
	"github.com/directpipe/directpipe/controlplane/translate"
)

// topIdentities is how many identities `dpctl top` and /metrics name;
// the rest add up in one row, so that millions of callers stay a few
// series.
const topIdentities = 20

// QuotaStreams returns the live streams of each identity under a quota,
// as the Envoys' stats show them (with a shared store, those of every
// replica's Envoys): the identities holding the most, then one row adding
// up the others.
func (a *App) QuotaStreams() []*adminv1.IdentityStreams {
	p, _ := a.Policy()
	return identityRows(p, a.fleetQuotaUse(), topIdentities)
}

// NodeStats is the store of the stats this replica's Envoys send.
func (a *App) NodeStats() *nodestats.Store { return a.nodeStats }

// identityRows turns the nodes' counts into rows: one per policy and
// identity with live streams under a policy that has quotas, the top
// ones by live streams (then by policy and identity), then a row with
// Other set for the rest, if any.
func identityRows(p *policyv1.Policy, use map[string]nodestats.QuotaUse, top int) []*adminv1.IdentityStreams {
	quotas := map[string]*policyv1.Quotas{}
	for _, ap := range p.GetAuthPolicies() {
		if q := ap.GetQuotas(); q != nil {
			quotas[ap.GetName()] = q
		}
	}
	type key struct{ policy, identity string }
	rows := map[key]*adminv1.IdentityStreams{}
	for node, u := range use {
		for policy, ids := range u.Live {
			q, ok := quotas[policy]
			if !ok {
				continue
			}
			for id, live := range ids {
				if live <= 0 {
					continue
				}
				k := key{policy, id}
				r := rows[k]
				if r == nil {
					r = &adminv1.IdentityStreams{Policy: policy, Identity: id, Quota: translate.StreamQuota(q, id), Nodes: map[string]uint64{}}
					rows[k] = r
				}
				r.Live += uint64(live)
				r.Nodes[node] += uint64(live)
			}
		}
	}
	list := slices.Collect(maps.Values(rows))
	slices.SortFunc(list, func(x, y *adminv1.IdentityStreams) int {
		return cmp.Or(cmp.Compare(y.GetLive(), x.GetLive()), cmp.Compare(x.GetPolicy(), y.GetPolicy()), cmp.Compare(x.GetIdentity(), y.GetIdentity()))
	})
	if len(list) <= top {
		return list
	}
	other := &adminv1.IdentityStreams{Other: true, Nodes: map[string]uint64{}}
	for _, r := range list[top:] {
		other.Live += r.GetLive()
		for n, v := range r.GetNodes() {
			other.Nodes[n] += v
		}
	}
	return append(list[:top], other)
}

// topRefusals is the refusal counts by identity label, the top ones by
// count and "other" adding up the rest (the module's own "other"
// included).
func topRefusals(labels map[string]uint64, top int) map[string]uint64 {
	names := slices.Collect(maps.Keys(labels))
	slices.SortFunc(names, func(x, y string) int { return cmp.Or(cmp.Compare(labels[y], labels[x]), cmp.Compare(x, y)) })
	out := map[string]uint64{}
	for i, n := range names {
		if i < top && n != otherLabel {
			out[n] = labels[n]
		} else {
			out[otherLabel] += labels[n]
		}
	}
	return out
}

const otherLabel = "other"

// quotaCollector puts the identities' live streams and the quota
// refusals on /metrics, both with bounded labels.
type quotaCollector struct {
	a             *App
	live, refused *prometheus.Desc
}

func newQuotaCollector(a *App) *quotaCollector {
	return &quotaCollector{
		a: a,
		live: prometheus.NewDesc("directpipe_quota_streams_live",
			"Live streams of each identity under a quota, from the Envoys' stats, for the identities holding the most; the rest add up under identity=\"other\" (policy=\"\").",
			[]string{"policy", "identity"}, nil),
		refused: prometheus.NewDesc("directpipe_quota_refused",
			"Handshakes the Envoys refused over a quota since they started, by reason (stream_quota, handshake_rate) and identity as the module labels it, for the identities refused most; the rest add up under identity=\"other\".",
			[]string{"reason", "identity"}, nil),
	}
}

func (c *quotaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.live
	ch <- c.refused
}

func (c *quotaCollector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.a.QuotaStreams() {
		id := r.GetIdentity()
		if r.GetOther() {
			id = otherLabel
		}
		ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(r.GetLive()), r.GetPolicy(), id)
	}
	for reason, labels := range c.a.nodeStats.QuotaRefusals() {
		for label, n := range topRefusals(labels, topIdentities) {
			ch <- prometheus.MustNewConstMetric(c.refused, prometheus.GaugeValue, float64(n), reason, label)
		}
	}
}
