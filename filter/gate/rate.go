package gate

import (
	"errors"
	"math"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// rateTries bounds the compare-and-swap loop on one identity's bucket:
// only the other workers' VMs write it, so more tries than workers is
// plenty.
const rateTries = 8

// admitRate spends a token of the identity's handshake bucket under policy
// p, kept in the data all the module's VMs in the Envoy share, so the rate
// holds per Envoy whatever worker takes the connection. A policy without a
// rate admits everything at no host call. When the host cannot keep the
// bucket, the handshake is admitted and the failure logged: the rate is a
// bound on load, not a check of identity.
func admitRate(h Host, p *auth.Policy, identity string, now time.Time) auth.Decision {
	r := p.HandshakeRate
	if r == nil {
		return auth.Decision{Allow: true}
	}
	key := auth.RateKey(p.Name, identity)
	for range rateTries {
		state, cas, err := h.SharedData(key)
		if err != nil {
			h.Log(LevelWarn, "handshake rate of policy "+p.Name+" not checked: "+err.Error())
			return auth.Decision{Allow: true}
		}
		next, ok, retry := auth.TakeToken(*r, state, now)
		switch err := h.SetSharedData(key, next, cas); {
		case err == nil && ok:
			return auth.Decision{Allow: true}
		case err == nil:
			return rateLimited(retry)
		case !errors.Is(err, ErrCASMismatch):
			h.Log(LevelWarn, "handshake rate of policy "+p.Name+" not kept: "+err.Error())
			return auth.Decision{Allow: true}
		}
	}
	// Every try lost the race to another worker: that identity is opening
	// streams on all of them at once.
	return rateLimited(time.Second)
}

func rateLimited(retry time.Duration) auth.Decision {
	d := auth.Denial(contract.ReasonRateLimited)
	d.RetryAfterSeconds = max(1, int(math.Ceil(retry.Seconds())))
	return d
}
