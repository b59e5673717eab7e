package translate

import (
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/contract"
)

// envoyQuotas is one Envoy's share of a policy's fleet-wide quotas: each
// of envoys Envoys enforces an even share, rounded up so that every Envoy
// admits at least one stream and one handshake a second of each identity
// that has a limit. Rounding up is what lets the fleet exceed a quota, by
// at most envoys-1 (docs/admission.md states the bound).
func envoyQuotas(q *policyv1.Quotas, envoys int) *contract.Quotas {
	if q == nil {
		return nil
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
