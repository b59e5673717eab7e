package gate

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// errCASExhausted: other workers kept changing an entry.
var errCASExhausted = errors.New("shared data kept changing under compare-and-swap")

// errTableFull: every slot an identity (or a VM instance) may use holds
// another's live entry.
var errTableFull = errors.New("quota table full around the entry's slot")

// casAttempts bounds the retries of one shared-data update: another
// worker changing the same entry between a read and a write makes the
// write fail; past this many the handshake is refused rather than counted
// wrongly.
const casAttempts = 16

// The Proxy-Wasm ABI cannot delete a shared-data entry, so the quota
// state lives in fixed tables keyed by slot number: two of
// contract.QuotaSlots entries (live streams, handshake buckets) and one of
// aliveSlots (the VM instances that count streams). An Envoy's shared data
// never holds more than that, however many identities and VMs come and
// go. An identity's entry is in one of the QuotaProbe slots from its hash
// on (linear probing); a slot whose entry counts nothing (no live stream
// of a live VM, a full bucket) may be taken by another identity. When all
// of an identity's slots hold other identities' live counts, its
// handshake is refused (stream_quota or handshake_rate) rather than let
// through uncounted.
const (
	streamsTable  = "directpipe.quota_streams/"
	rateTable     = "directpipe.quota_rate/"
	gaugeBudget   = "directpipe.quota_gauges"
	fieldSep      = " "
	streamsFields = 3 // counts by VM instance, gauge flag, owner
	rateFields    = 5 // thousandths, last refill, per second, capacity, owner
)

// held is what an admitted stream holds: its slot in the streams table,
// the owner (policy/identity) that slot counts, the VM instance it is
// counted under, and the gauge it added to.
type held struct {
	slot     uint32
	owner    string
	instance string
	gauge    string
}

// Quota admits handshakes against a policy's per-identity limits and
// remembers which count each admitted stream or connection holds, so that
// its deletion (proxy_on_delete, which the module already exports) gives
// the stream back: no callback is added per stream end. The counts live
// in the Envoy's shared data, which every worker's VM reads and writes
// with compare-and-swap, so the limit is per Envoy, not per worker.
//
// Each entry counts its identity's streams by VM instance, and a VM that
// fails (and so never gives its streams back) stops counting once it has
// been silent for AliveTimeout: see quotalive.go.
//
// Each identity's live streams are also a gauge of the Envoy's stats
// (contract.MetricQuotaLivePrefix), which the control plane reads to
// split quotas by use; an Envoy defines at most
// contract.MaxIdentityGauges of them.
type Quota struct {
	held map[uint32]held
	// labelled are the identities whose refusals have counters of their
	// own, at most contract.MaxIdentityMetrics: the first ones refused.
	labelled map[string]bool
	// gauged are the owners this VM knows to have a gauge; at most
	// contract.MaxIdentityGauges, the Envoy's budget.
	gauged map[string]bool
	// node is the Envoy's node id, read once, when a split first needs it.
	node     string
	nodeRead bool
	// nonce tells this instance from a dead one that had its alive slot;
	// random, so a reloaded VM's counts never mix with its predecessor's.
	// instance is the name its counts go under ("" until it has an alive
	// slot), lastAlive when it last said so.
	nonce     string
	aliveSlot uint32
	instance  string
	lastAlive time.Time
}

// NewQuota returns a quota holding no stream.
func NewQuota() *Quota {
	var b [8]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return &Quota{held: map[uint32]held{}, labelled: map[string]bool{}, gauged: map[string]bool{}, nonce: hex.EncodeToString(b[:])}
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
	owner := p.Name + "/" + identity
	if r := p.Quotas.Handshakes; r != nil {
		ok, err := takeToken(h, owner, r, now)
		if errors.Is(err, errTableFull) {
			return contract.ReasonHandshakeRate
		}
		if err != nil {
			h.Log(LevelError, "handshake rate: "+err.Error())
			return contract.ReasonInternal
		}
		if !ok {
			return contract.ReasonHandshakeRate
		}
	}
	limit := p.Quotas.StreamLimit(q.nodeID(h, p.Quotas), identity)
	if limit == 0 {
		return ""
	}
	// Alive before the count another worker may read: with no stream
	// held, no tick has kept the alive slot fresh.
	if len(q.held) == 0 || now.Sub(q.lastAlive) >= AliveRefresh {
		err := q.alive(h, now)
		if errors.Is(err, errTableFull) {
			return contract.ReasonStreamQuota
		}
		if err != nil {
			h.Log(LevelError, "stream quota: "+err.Error())
			return contract.ReasonInternal
		}
	}
	lv := liveness{h: h, now: now, self: q.instance}
	slot, gauged, admitted, err := addStream(h, owner, uint64(limit), &lv, func() bool { return q.gaugeFor(h, owner, identity) })
	if errors.Is(err, errTableFull) {
		return contract.ReasonStreamQuota
	}
	if err != nil {
		h.Log(LevelError, "stream quota: "+err.Error())
		return contract.ReasonInternal
	}
	if !admitted {
		return contract.ReasonStreamQuota
	}
	if gauged {
		q.gauged[owner] = true
	}
	gauge := gaugeOf(owner, gauged)
	h.AddGauge(gauge, 1)
	q.held[id] = held{slot: slot, owner: owner, instance: q.instance, gauge: gauge}
	return ""
}

// nodeID is the Envoy's node id when the quotas hold a split (only then
// does the limit depend on it).
func (q *Quota) nodeID(h Host, qs *contract.Quotas) string {
	if len(qs.Split) == 0 || q.nodeRead {
		return q.node
	}
	node, err := h.NodeID()
	if err != nil {
		// Without it every split identity gets its Rest: never more
		// than the control plane gave any Envoy that it did not name.
		h.Log(LevelWarn, "cannot read the node id; quotas split by use apply their rest: "+err.Error())
	}
	q.node, q.nodeRead = node, true
	return node
}

// gaugeOf names the gauge an owner's live streams add to: its own, or the
// unlabelled one past the budget. Policy names hold no "/".
func gaugeOf(owner string, gauged bool) string {
	if !gauged {
		return contract.MetricQuotaLiveUnlabelled
	}
	policy, identity, _ := strings.Cut(owner, "/")
	return contract.MetricQuotaLivePrefix + contract.EscapeStatName(policy) + "." + contract.EscapeStatName(identity)
}

// gaugeFor decides whether an owner taking a slot gets a gauge of its
// own: yes if this VM has seen it with one, else if the Envoy's budget
// (one shared counter) still has room.
func (q *Quota) gaugeFor(h Host, owner, identity string) bool {
	if q.gauged[owner] {
		return true
	}
	if len(identity) > contract.MaxGaugeIdentityBytes {
		return false
	}
	for range casAttempts {
		v, cas, err := h.SharedData(gaugeBudget)
		if err != nil {
			return false
		}
		n, _ := strconv.ParseUint(string(v), 10, 64)
		if n >= contract.MaxIdentityGauges {
			return false
		}
		if ok, err := h.SetSharedData(gaugeBudget, []byte(strconv.FormatUint(n+1, 10)), cas); err != nil {
			return false
		} else if ok {
			return true
		}
	}
	return false
}

// Release gives back the stream context id holds, if it holds one.
func (q *Quota) Release(h Host, id uint32) {
	s, ok := q.held[id]
	if !ok {
		return
	}
	delete(q.held, id)
	// The gauge follows the count: whoever drops a count takes it off
	// the gauge.
	released, err := releaseStream(h, s.slot, s.owner, s.instance)
	if err != nil {
		// The count stays one too high until this VM ends: better than a
		// count that admits more than the quota.
		h.Log(LevelError, "stream quota: giving back a stream: "+err.Error())
		return
	}
	if released {
		h.AddGauge(s.gauge, -1)
	}
}

// holds reports whether stream id is counted against a quota.
func (q *Quota) holds(id uint32) bool {
	_, ok := q.held[id]
	return ok
}

// Held is the number of streams this worker counts.
func (q *Quota) Held() int { return len(q.held) }

// slotOf is where owner's probe sequence starts.
func slotOf(owner string) uint32 {
	f := fnv.New32a()
	f.Write([]byte(owner))
	return f.Sum32() % contract.QuotaSlots
}

func slotKey(table string, slot uint32) string { return table + strconv.FormatUint(uint64(slot), 10) }

// probe finds owner's entry in a table: its slot, fields and token, and
// found. Without one it returns the first slot whose entry free says may
// be taken, with that entry's fields if it has them (found false), or
// errTableFull.
func probe(h Host, table, owner string, fields int, free func(f []string) bool) (slot uint32, f []string, cas uint32, found bool, err error) {
	start := slotOf(owner)
	takeable := false
	var takeSlot, takeCAS uint32
	var takeF []string
	for i := range uint32(contract.QuotaProbe) {
		s := (start + i) % contract.QuotaSlots
		v, c, err := h.SharedData(slotKey(table, s))
		if err != nil {
			return 0, nil, 0, false, err
		}
		if len(v) == 0 {
			// Never written: entries are overwritten, never removed, so
			// owner's entry, placed at the first slot it could take,
			// cannot be further on.
			if !takeable {
				takeSlot, takeCAS = s, c
			}
			return takeSlot, takeF, takeCAS, false, nil
		}
		f := strings.SplitN(string(v), fieldSep, fields)
		if len(f) == fields && f[fields-1] == owner {
			return s, f, c, true, nil
		}
		if !takeable && (len(f) != fields || free(f)) {
			takeable, takeSlot, takeCAS = true, s, c
			if len(f) == fields {
				takeF = f
			}
		}
	}
	if !takeable {
		return 0, nil, 0, false, errTableFull
	}
	return takeSlot, takeF, takeCAS, false, nil
}

// addStream counts one more stream of owner, under lv.self, unless that
// would take owner's streams over limit. A new entry's gauge flag is asked
// of gauge, once. The counts of VM instances lv finds dead leave the
// entry it writes (owner's own, or another owner's it takes over), and
// their gauge with them: a failed VM's additions to a gauge outlive it,
// and the write that drops its counts is the one place that knows them.
func addStream(h Host, owner string, limit uint64, lv *liveness, gauge func() bool) (slot uint32, gauged, admitted bool, err error) {
	free := func(f []string) bool { return lv.total(parseCounts(f[0])) == 0 }
	asked, flag := false, false
	for range casAttempts {
		slot, f, cas, found, err := probe(h, streamsTable, owner, streamsFields, free)
		if err != nil {
			return 0, false, false, err
		}
		c, gone, goneGauge := counts{}, uint64(0), ""
		switch {
		case found:
			c, flag = parseCounts(f[0]), f[1] == "1"
			gone, goneGauge = lv.dropDead(c), gaugeOf(owner, flag)
		case f != nil:
			// Free: whatever it still counts is dead instances'.
			gone, goneGauge = lv.dropDead(parseCounts(f[0])), gaugeOf(f[2], f[1] == "1")
		}
		if !found && !asked {
			asked, flag = true, gauge()
		}
		if c.sum()+1 > limit {
			return 0, false, false, nil
		}
		c[lv.self]++
		ok, err := h.SetSharedData(slotKey(streamsTable, slot), streamsEntry(c, flag, owner), cas)
		if err != nil {
			return 0, false, false, err
		}
		if ok {
			if gone > 0 {
				h.AddGauge(goneGauge, -int64(gone))
			}
			return slot, flag, true, nil
		}
	}
	return 0, false, false, errCASExhausted
}

// releaseStream takes one stream of owner off instance's count in slot,
// and says whether it did: a count dropped as a dead VM's (this one was
// silent too long), or a slot now holding another owner, is left alone.
func releaseStream(h Host, slot uint32, owner, instance string) (bool, error) {
	key := slotKey(streamsTable, slot)
	for range casAttempts {
		v, cas, err := h.SharedData(key)
		if err != nil {
			return false, err
		}
		f := strings.SplitN(string(v), fieldSep, streamsFields)
		if len(f) != streamsFields || f[2] != owner {
			return false, nil
		}
		c := parseCounts(f[0])
		if c[instance] == 0 {
			return false, nil
		}
		c[instance]--
		ok, err := h.SetSharedData(key, streamsEntry(c, f[1] == "1", owner), cas)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
	}
	return false, errCASExhausted
}

func streamsEntry(c counts, gauged bool, owner string) []byte {
	g := "0"
	if gauged {
		g = "1"
	}
	return []byte(c.String() + fieldSep + g + fieldSep + owner)
}

// takeToken takes one token from owner's bucket, refilled at r's rate
// since its last use; false when it is empty. The bucket holds tokens in
// thousandths so that a fraction of a second's refill is not lost. A
// bucket that would be full now counts nothing: its slot may be taken.
func takeToken(h Host, owner string, r *contract.Rate, now time.Time) (bool, error) {
	burst := uint64(r.Burst)
	if burst == 0 {
		burst = uint64(r.PerSecond)
	}
	capacity := burst * 1000
	free := func(f []string) bool {
		b, ok := parseBucket(f)
		return !ok || b.refilled(now) >= b.capacity
	}
	for range casAttempts {
		slot, f, cas, found, err := probe(h, rateTable, owner, rateFields, free)
		if err != nil {
			return false, err
		}
		b := bucket{milli: capacity, last: now.UnixNano()}
		if found {
			if old, ok := parseBucket(f); ok {
				b.milli, b.last = old.milli, old.last
			}
		}
		b.perSecond, b.capacity = uint64(r.PerSecond), capacity
		// Only whole milliseconds are consumed, so frequent handshakes
		// lose no refill; a full bucket forgets the time.
		if ms := (now.UnixNano() - b.last) / int64(time.Millisecond); ms > 0 {
			b.milli = b.refilled(now)
			b.last += ms * int64(time.Millisecond)
			if b.milli >= capacity {
				b.milli, b.last = capacity, now.UnixNano()
			}
		}
		allowed := b.milli >= 1000
		if allowed {
			b.milli -= 1000
		}
		ok, err := h.SetSharedData(slotKey(rateTable, slot), b.entry(owner), cas)
		if err != nil {
			return false, err
		}
		if ok {
			return allowed, nil
		}
	}
	return false, errCASExhausted
}

// bucket is a handshake-rate entry; it carries its rate so that any
// worker can tell whether another identity's bucket is full.
type bucket struct {
	milli, perSecond, capacity uint64
	last                       int64 // unix nanos of the last refill
}

// refilled is the bucket's thousandths at now, capped at its capacity.
// PerSecond tokens a second is PerSecond thousandths a millisecond; at
// most an hour of refill counts, so the sum cannot overflow.
func (b bucket) refilled(now time.Time) uint64 {
	ms := (now.UnixNano() - b.last) / int64(time.Millisecond)
	if ms <= 0 {
		return b.milli
	}
	return min(b.capacity, b.milli+b.perSecond*uint64(min(ms, int64(time.Hour/time.Millisecond))))
}

func (b bucket) entry(owner string) []byte {
	return []byte(strings.Join([]string{
		strconv.FormatUint(b.milli, 10), strconv.FormatInt(b.last, 10),
		strconv.FormatUint(b.perSecond, 10), strconv.FormatUint(b.capacity, 10), owner,
	}, fieldSep))
}

// parseBucket reads a rate entry's fields: thousandths, last refill, per
// second, capacity, owner.
func parseBucket(f []string) (bucket, bool) {
	if len(f) != rateFields {
		return bucket{}, false
	}
	var b bucket
	var errs [4]error
	b.milli, errs[0] = strconv.ParseUint(f[0], 10, 64)
	b.last, errs[1] = strconv.ParseInt(f[1], 10, 64)
	b.perSecond, errs[2] = strconv.ParseUint(f[2], 10, 64)
	b.capacity, errs[3] = strconv.ParseUint(f[3], 10, 64)
	return b, errors.Join(errs[:]...) == nil
}
