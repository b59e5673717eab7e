package gate

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// errCASExhausted: other workers kept changing an entry.
var errCASExhausted = errors.New("shared data kept changing under compare-and-swap")

// casAttempts bounds the retries of one shared-data update: another
// worker changing the same identity's entry between a read and a write
// makes the write fail; past this many the handshake is refused rather
// than counted wrongly.
const casAttempts = 16

// Key prefixes of the shared-data entries; the policy and the identity
// follow, so two policies never share a count.
const (
	streamsKeyPrefix = "directpipe.streams/"
	rateKeyPrefix    = "directpipe.rate/"
)

// Quota admits handshakes against a policy's per-identity limits and
// remembers which count each admitted stream or connection holds, so that
// its deletion (proxy_on_delete, which the module already exports) gives
// the stream back: no callback is added per stream end. The counts live
// in the Envoy's shared data, which every worker's VM reads and writes
// with compare-and-swap, so the limit is per Envoy, not per worker.
type Quota struct {
	held map[uint32]string // context id to the streams key it counts in
	// labelled are the identities whose refusals have counters of their
	// own, at most contract.MaxIdentityMetrics: the first ones refused.
	labelled map[string]bool
}

// NewQuota returns a quota holding no stream.
func NewQuota() *Quota { return &Quota{held: map[uint32]string{}, labelled: map[string]bool{}} }

// Admit decides whether the identity of an allowed decision may open one
// more stream, as context id, under policy p: "" when it may (and then the
// stream is counted until Release), else the reason it may not. A refusal
// over a limit is also counted for the identity.
func (q *Quota) Admit(h Host, id uint32, p *auth.Policy, identity string, now time.Time) string {
	reason := q.admit(h, id, p, identity, now)
	if reason == contract.ReasonStreamQuota || reason == contract.ReasonHandshakeRate {
		h.Count(contract.MetricQuotaDeniedPrefix + reason + "." + q.label(identity))
	}
	return reason
}

// label is identity's part of a refusal counter's name: the identity with
// every byte a stat name should not hold replaced, for the first
// identities refused; QuotaOtherIdentity after them, so the number of
// counters stays bounded whatever callers send.
func (q *Quota) label(identity string) string {
	if !q.labelled[identity] {
		if len(q.labelled) >= contract.MaxIdentityMetrics {
			return contract.QuotaOtherIdentity
		}
		q.labelled[identity] = true
	}
	b := []byte(identity[:min(len(identity), contract.MaxIdentityLabelBytes)])
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	return string(b)
}

func (q *Quota) admit(h Host, id uint32, p *auth.Policy, identity string, now time.Time) string {
	if p == nil || p.Quotas == nil || identity == "" {
		return ""
	}
	if len(q.held) >= contract.MaxHeldStreams {
		return contract.ReasonStreamQuota
	}
	if r := p.Quotas.Handshakes; r != nil {
		ok, err := takeToken(h, rateKeyPrefix+p.Name+"/"+identity, r, now)
		if err != nil {
			h.Log(LevelError, "handshake rate: "+err.Error())
			return contract.ReasonInternal
		}
		if !ok {
			return contract.ReasonHandshakeRate
		}
	}
	limit, ok := p.Quotas.Identities[identity]
	if !ok {
		limit = p.Quotas.MaxStreams
	}
	if limit == 0 {
		return ""
	}
	key := streamsKeyPrefix + p.Name + "/" + identity
	admitted, err := addStreams(h, key, 1, uint64(limit))
	if err != nil {
		h.Log(LevelError, "stream quota: "+err.Error())
		return contract.ReasonInternal
	}
	if !admitted {
		return contract.ReasonStreamQuota
	}
	q.held[id] = key
	return ""
}

// Release gives back the stream context id holds, if it holds one.
func (q *Quota) Release(h Host, id uint32) {
	key, ok := q.held[id]
	if !ok {
		return
	}
	delete(q.held, id)
	if _, err := addStreams(h, key, -1, 0); err != nil {
		// The count stays one too high until the Envoy restarts: better
		// than a count that admits more than the quota.
		h.Log(LevelError, "stream quota: giving back a stream: "+err.Error())
	}
}

// Held is the number of streams this worker counts.
func (q *Quota) Held() int { return len(q.held) }

// addStreams adds delta to the count at key, unless that would take it
// over limit (0: no limit, for giving back); a count never goes below 0.
func addStreams(h Host, key string, delta int64, limit uint64) (bool, error) {
	for range casAttempts {
		v, cas, err := h.SharedData(key)
		if err != nil {
			return false, err
		}
		n, _ := strconv.ParseUint(string(v), 10, 64) // absent or garbled: 0
		switch {
		case delta > 0 && limit > 0 && n+uint64(delta) > limit:
			return false, nil
		case delta < 0 && n < uint64(-delta):
			n = 0
		default:
			n = uint64(int64(n) + delta)
		}
		ok, err := h.SetSharedData(key, []byte(strconv.FormatUint(n, 10)), cas)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, errCASExhausted
}

// takeToken takes one token from the bucket at key, refilled at r's rate
// since its last use; false when it is empty. The bucket holds tokens in
// thousandths so that a fraction of a second's refill is not lost.
func takeToken(h Host, key string, r *contract.Rate, now time.Time) (bool, error) {
	burst := uint64(r.Burst)
	if burst == 0 {
		burst = uint64(r.PerSecond)
	}
	capacity := burst * 1000
	for range casAttempts {
		v, cas, err := h.SharedData(key)
		if err != nil {
			return false, err
		}
		milli, last, found := parseBucket(string(v))
		if !found {
			milli, last = capacity, now.UnixNano()
		}
		// PerSecond tokens a second is PerSecond thousandths a
		// millisecond. Only whole milliseconds are consumed, so frequent
		// handshakes lose no refill; a full bucket forgets the time.
		if ms := (now.UnixNano() - last) / int64(time.Millisecond); ms > 0 {
			milli += uint64(r.PerSecond) * uint64(min(ms, int64(time.Hour/time.Millisecond)))
			last += ms * int64(time.Millisecond)
			if milli >= capacity {
				milli, last = capacity, now.UnixNano()
			}
		}
		allowed := milli >= 1000
		if allowed {
			milli -= 1000
		}
		ok, err := h.SetSharedData(key, []byte(strconv.FormatUint(milli, 10)+" "+strconv.FormatInt(last, 10)), cas)
		if err != nil {
			return false, err
		}
		if ok {
			return allowed, nil
		}
	}
	return false, errCASExhausted
}

// parseBucket reads "tokens-in-thousandths last-refill-unix-nanos".
func parseBucket(v string) (milli uint64, last int64, ok bool) {
	a, b, found := strings.Cut(v, " ")
	if !found {
		return 0, 0, false
	}
	m, err1 := strconv.ParseUint(a, 10, 64)
	l, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return m, l, true
}
