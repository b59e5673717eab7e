package gate

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
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
	// Stream counts are kept per VM instance (see counts): the key is not
	// the earlier module's, whose single number a rollout's two modules
	// would both write.
	streamsKeyPrefix = "directpipe.streams.v2/"
	rateKeyPrefix    = "directpipe.rate/"
	// aliveKeyPrefix and a VM instance's id name when it last said it
	// was alive, in Unix milliseconds.
	aliveKeyPrefix = "directpipe.alive/"
)

// A VM that fails is never called again, so the streams it counted are
// never given back by it; Envoy's shared data outlives it, and the VM
// that replaces it would find the identities it served still at their
// quota. So each instance counts its own streams, says every
// AliveRefresh that it is alive while it holds any, and an instance
// silent for AliveTimeout no longer counts: an admission drops its
// streams. AliveTimeout is well above the fault-injection build's 5 s
// tick.
const (
	AliveRefresh = time.Second
	AliveTimeout = 15 * time.Second
)

// Quota admits handshakes against a policy's per-identity limits and
// remembers which count each admitted stream or connection holds, so that
// its deletion (proxy_on_delete, which the module already exports) gives
// the stream back: no callback is added per stream end. The counts live
// in the Envoy's shared data, which every worker's VM reads and writes
// with compare-and-swap, so the limit is per Envoy, not per worker.
type Quota struct {
	// instance names this Quota's counts in the shared data: random, so
	// a reloaded VM's never mixes with its dead predecessor's.
	instance  string
	lastAlive time.Time
	held      map[uint32]string // context id to the streams key it counts in
	// labelled are the identities whose refusals have counters of their
	// own, at most contract.MaxIdentityMetrics: the first ones refused.
	labelled map[string]bool
}

// NewQuota returns a quota holding no stream.
func NewQuota() *Quota {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return &Quota{instance: hex.EncodeToString(b[:]), held: map[uint32]string{}, labelled: map[string]bool{}}
}

// Refresh says this instance is alive, at most every AliveRefresh and
// only while it counts streams. The module calls it from every tick.
func (q *Quota) Refresh(h Host, now time.Time) {
	if len(q.held) == 0 || now.Sub(q.lastAlive) < AliveRefresh {
		return
	}
	q.alive(h, now)
}

func (q *Quota) alive(h Host, now time.Time) {
	if _, err := h.SetSharedData(aliveKeyPrefix+q.instance, []byte(strconv.FormatInt(now.UnixMilli(), 10)), 0); err != nil {
		h.Log(LevelError, "stream quota: "+err.Error())
		return
	}
	q.lastAlive = now
}

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
	if len(q.held) == 0 || now.Sub(q.lastAlive) >= AliveRefresh {
		q.alive(h, now) // before the count another worker may read
	}
	admitted, err := q.addStreams(h, key, 1, uint64(limit), now)
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
	if _, err := q.addStreams(h, key, -1, 0, time.Time{}); err != nil {
		// The count stays one too high until the Envoy restarts: better
		// than a count that admits more than the quota.
		h.Log(LevelError, "stream quota: giving back a stream: "+err.Error())
	}
}

// Held is the number of streams this worker counts.
func (q *Quota) Held() int { return len(q.held) }

// addStreams adds delta to this instance's count at key, unless that
// would take the key's total over limit (0: no limit, for giving back); a
// count never goes below 0. An admission (now set) first drops the
// counts of instances no longer alive.
func (q *Quota) addStreams(h Host, key string, delta int64, limit uint64, now time.Time) (bool, error) {
	for range casAttempts {
		v, cas, err := h.SharedData(key)
		if err != nil {
			return false, err
		}
		c := parseCounts(string(v)) // absent or garbled: none
		if !now.IsZero() {
			q.dropDead(h, c, now)
		}
		own := c[q.instance]
		switch {
		case delta > 0 && limit > 0 && c.total()+uint64(delta) > limit:
			return false, nil
		case delta < 0 && own < uint64(-delta):
			own = 0
		default:
			own = uint64(int64(own) + delta)
		}
		c[q.instance] = own
		ok, err := h.SetSharedData(key, []byte(c.String()), cas)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, errCASExhausted
}

// dropDead removes from c the counts of other instances that have not
// said they are alive within AliveTimeout of now. One it cannot read
// stays: a count too high refuses, one too low would admit.
func (q *Quota) dropDead(h Host, c counts, now time.Time) {
	for inst := range c {
		if inst == q.instance {
			continue
		}
		v, _, err := h.SharedData(aliveKeyPrefix + inst)
		if err != nil {
			continue
		}
		if ms, err := strconv.ParseInt(string(v), 10, 64); err != nil || now.Sub(time.UnixMilli(ms)) > AliveTimeout {
			delete(c, inst)
		}
	}
}

// counts are one identity's live streams by VM instance, kept in the
// shared data as "instance=n" fields separated by spaces.
type counts map[string]uint64

func parseCounts(v string) counts {
	c := counts{}
	for f := range strings.FieldsSeq(v) {
		inst, n, ok := strings.Cut(f, "=")
		if k, err := strconv.ParseUint(n, 10, 64); ok && inst != "" && err == nil {
			c[inst] = k
		}
	}
	return c
}

func (c counts) total() uint64 {
	var n uint64
	for _, k := range c {
		n += k
	}
	return n
}

// String writes the counts in a fixed order, leaving out the zeros.
func (c counts) String() string {
	var b strings.Builder
	for _, inst := range slices.Sorted(maps.Keys(c)) {
		if c[inst] == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(inst + "=" + strconv.FormatUint(c[inst], 10))
	}
	return b.String()
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
