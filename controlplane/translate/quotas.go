package translate

import (
	"cmp"
	"slices"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/contract"
)

// QuotaUse is where each identity's live streams are, as the Envoys'
// stats report them.
type QuotaUse struct {
	// Nodes are the Envoys sharing the quotas; with QuotaUse set, the
	// even shares are split among len(Nodes) Envoys.
	Nodes []string
	// Live is each identity's live streams on each Envoy: by policy,
	// identity, then node id. Zeros may be left out.
	Live map[string]map[string]map[string]uint32
	// Partial names the Envoys whose counts are incomplete (they report
	// no stats, or streams of identities they keep no gauge for): an
	// identity such an Envoy does not show may have streams there.
	Partial map[string]bool
}

// policy is the part of u for one policy: its identities' counts, and
// the Envoys; nil without a QuotaUse.
func (u *QuotaUse) policy(name string) *policyUse {
	if u == nil {
		return nil
	}
	return &policyUse{use: u, live: u.Live[name]}
}

type policyUse struct {
	use  *QuotaUse
	live map[string]map[string]uint32
}

// envoyQuotas is one Envoy's share of a policy's fleet-wide quotas. The
// even share: each of envoys Envoys enforces the limit divided among
// them, rounded up so that every Envoy admits at least one stream and one
// handshake a second of each identity that has a limit. With use, an
// identity that holds streams somewhere gets its stream quota split by
// where they are (splitByUse) instead; the handshake rate stays even.
// Rounding up is what lets the fleet exceed a quota, by at most Envoys-1
// (docs/admission.md states the bound).
func envoyQuotas(q *policyv1.Quotas, envoys int, use *policyUse) *contract.Quotas {
	if q == nil {
		return nil
	}
	if use != nil {
		envoys = len(use.use.Nodes)
	}
	out := &contract.Quotas{MaxStreams: share(q.GetMaxStreams(), envoys)}
	if ids := q.GetIdentityMaxStreams(); len(ids) > 0 {
		out.Identities = make(map[string]uint32, len(ids))
		for id, n := range ids {
			out.Identities[id] = share(n, envoys)
		}
	}
	if r := q.GetHandshakes(); r != nil {
		burst := r.GetBurst()
		if burst == 0 {
			burst = r.GetPerSecond()
		}
		out.Handshakes = &contract.Rate{PerSecond: share(r.GetPerSecond(), envoys), Burst: share(burst, envoys)}
	}
	if use != nil {
		out.Split = use.split(q)
	}
	return out
}

// maxSplitShares bounds the node shares one policy's split names in all,
// so that the filter configuration stays small whatever the fleet's size.
const maxSplitShares = 20_000

// split is the split by use of every identity holding streams under q,
// for the identities holding the most when there are more than a config
// may name.
func (u *policyUse) split(q *policyv1.Quotas) map[string]*contract.Split {
	type held struct {
		identity string
		total    uint64
	}
	var busy []held
	for id, nodes := range u.live {
		var total uint64
		for _, n := range u.use.Nodes {
			total += uint64(nodes[n])
		}
		if total > 0 && StreamQuota(q, id) > 0 {
			busy = append(busy, held{id, total})
		}
	}
	slices.SortFunc(busy, func(a, b held) int {
		return cmp.Or(cmp.Compare(b.total, a.total), cmp.Compare(a.identity, b.identity))
	})
	var out map[string]*contract.Split
	named := 0
	for _, b := range busy[:min(len(busy), contract.MaxSplitIdentities)] {
		nodes := make([]NodeLive, len(u.use.Nodes))
		for i, n := range u.use.Nodes {
			live := u.live[b.identity][n]
			nodes[i] = NodeLive{Node: n, Live: live, Known: live > 0 || !u.use.Partial[n]}
		}
		if s := splitByUse(StreamQuota(q, b.identity), nodes); s != nil {
			if named += len(s.Nodes); named > maxSplitShares {
				// The config would grow past what a filter config
				// should carry: the identities holding fewer streams
				// keep the even shares.
				break
			}
			if out == nil {
				out = map[string]*contract.Split{}
			}
			out[b.identity] = s
		}
	}
	return out
}

// StreamQuota is an identity's fleet-wide stream quota; 0 means no limit.
func StreamQuota(q *policyv1.Quotas, identity string) uint32 {
	if n, ok := q.GetIdentityMaxStreams()[identity]; ok {
		return n
	}
	return q.GetMaxStreams()
}

// NodeLive is one Envoy's live streams of one identity; Known is false
// when that Envoy's count of the identity is not known.
type NodeLive struct {
	Node  string
	Live  uint32
	Known bool
}

// splitByUse splits one identity's stream quota among the Envoys by where
// its streams are, so that an identity whose streams all go through one
// Envoy can reach its whole quota there:
//   - an Envoy whose count is unknown gets, and is counted as holding, the
//     even share (the quota divided among the Envoys, rounded up);
//   - the free remainder (the quota less what the others hold or are
//     counted as holding) is divided evenly among the Envoys whose counts
//     are known, rounded up;
//   - each known Envoy gets what it holds plus its part of the remainder,
//     and at least 1, so that no Envoy refuses an identity outright on
//     counts a few seconds old.
//
// The result names the Envoys with streams or unknown counts; Rest is for
// the others, including Envoys that join before the next split. nil when
// the split is the even one. When the counts are current and add up to at
// most the quota, the shares add up to at most quota + Envoys - 1, as the
// even ones do (docs/admission.md).
func splitByUse(quota uint32, nodes []NodeLive) *contract.Split {
	if quota == 0 || len(nodes) == 0 {
		return nil
	}
	even := share(quota, len(nodes))
	var counted uint64
	known := 0
	for _, n := range nodes {
		if n.Known {
			counted += uint64(n.Live)
			known++
		} else {
			counted += uint64(even)
		}
	}
	var part uint32
	if free := uint64(quota); known > 0 && counted < free {
		part = share(uint32(free-counted), known)
	}
	out := &contract.Split{Rest: max(part, 1), Nodes: map[string]uint32{}}
	isEven := true
	for _, n := range nodes {
		var s uint32
		switch {
		case !n.Known:
			s = even
		case n.Live > 0:
			s = uint32(min(uint64(n.Live)+uint64(part), contract.MaxStreamsPerIdentity))
		default:
			continue
		}
		out.Nodes[n.Node] = s
		isEven = isEven && s == even
	}
	// Rest matters only to an Envoy the split does not name.
	if isEven && (out.Rest == even || len(out.Nodes) == len(nodes)) {
		return nil
	}
	if len(out.Nodes) > contract.MaxSplitNodes {
		// More Envoys hold the identity's streams than a config may
		// name: the even split, which needs no names.
		return nil
	}
	return out
}

// share is n split among envoys, rounded up; 0 (no limit) stays 0.
func share(n uint32, envoys int) uint32 {
	if n == 0 || envoys <= 1 {
		return n
	}
	e := uint64(envoys)
	return uint32((uint64(n) + e - 1) / e)
}
