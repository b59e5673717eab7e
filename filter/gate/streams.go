package gate

import (
	"errors"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// streamQuotaRetrySeconds is the Retry-After of a stream quota refusal: a
// stream ends when its call does, which no one can foresee, so it is a
// pause long enough not to invite a retry storm.
const streamQuotaRetrySeconds = 5

// heldStream is a stream counted against its identity's quota, to be
// released when it ends.
type heldStream struct {
	key string
	id  uint64
}

// admitStream counts a new stream against the identity's max_streams in
// the data the module's VMs share in the Envoy, or refuses it when the
// identity holds its quota already. A policy without a quota costs no host
// call. When the host cannot keep the count, the stream is admitted
// uncounted and the failure logged, as for the handshake rate.
func admitStream(h Host, p *auth.Policy, identity string) (auth.Decision, *heldStream) {
	limit, bounded := auth.StreamLimit(&p.Policy, identity)
	if !bounded {
		return auth.Decision{Allow: true}, nil
	}
	key, id := auth.StreamSlot(p.Name, identity)
	for range rateTries {
		state, cas, err := h.SharedData(key)
		if err != nil {
			h.Log(LevelWarn, "stream quota of policy "+p.Name+" not checked: "+err.Error())
			return auth.Decision{Allow: true}, nil
		}
		next, ok := auth.AddStream(state, id, limit)
		if !ok {
			return streamQuotaFull(), nil
		}
		switch err := h.SetSharedData(key, next, cas); {
		case err == nil:
			return auth.Decision{Allow: true}, &heldStream{key: key, id: id}
		case !errors.Is(err, ErrCASMismatch):
			h.Log(LevelWarn, "stream quota of policy "+p.Name+" not kept: "+err.Error())
			return auth.Decision{Allow: true}, nil
		}
	}
	return streamQuotaFull(), nil
}

func streamQuotaFull() auth.Decision {
	d := auth.Denial(contract.ReasonStreamQuota)
	d.RetryAfterSeconds = streamQuotaRetrySeconds
	return d
}

// releaseStream counts a held stream's end. It runs in the callback Envoy
// already makes when a stream or connection is deleted: quotas add no
// module call per stream.
func releaseStream(h Host, s *heldStream) {
	if s == nil {
		return
	}
	// Only the other workers race for a slot, and only briefly; a release
	// that still loses leaves the identity one stream short until the VM
	// restarts, so it tries harder than an admission.
	for range 4 * rateTries {
		state, cas, err := h.SharedData(s.key)
		if err != nil {
			h.Log(LevelError, "a stream's end was not counted: "+err.Error())
			return
		}
		err = h.SetSharedData(s.key, auth.RemoveStream(state, s.id), cas)
		if err == nil {
			return
		}
		if !errors.Is(err, ErrCASMismatch) {
			h.Log(LevelError, "a stream's end was not counted: "+err.Error())
			return
		}
	}
	h.Log(LevelError, "a stream's end was not counted: its quota slot stayed contended")
}
