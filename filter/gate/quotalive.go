package gate

import (
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A VM that fails is never called again, so the streams it counted are
// never given back by it; Envoy's shared data outlives it, and the VM
// that replaces it would find the identities it served still at their
// quota. So each entry of the streams table counts by VM instance, each
// instance says every AliveRefresh that it is alive while it holds any
// stream, and an instance silent for AliveTimeout no longer counts: an
// admission drops its streams. AliveTimeout is well above the
// fault-injection build's 5 s tick.
const (
	AliveRefresh = time.Second
	AliveTimeout = 15 * time.Second
)

// The instances say they are alive in a fixed table too, so that VMs
// coming and going never grow the shared data: aliveSlots entries of
// "nonce unix-millis". An instance takes a slot no one wrote or whose
// instance has been silent for AliveTimeout, and its counts go under the
// name "slot.nonce": whoever reads a count finds its instance's slot in
// the name, and the nonce tells whether that instance still holds it.
// Each VM holds at most two slots (its HTTP and its tcp plugins' quotas),
// so 256 slots are enough for 128 workers' VMs, twice over during a
// rollout.
const (
	aliveTable = "directpipe.quota_alive/"
	aliveSlots = 256
)

// Refresh says this instance is alive, at most every AliveRefresh and
// only while it counts streams. The module calls it from every tick.
func (q *Quota) Refresh(h Host, now time.Time) {
	if len(q.held) == 0 || now.Sub(q.lastAlive) < AliveRefresh {
		return
	}
	if err := q.alive(h, now); err != nil {
		h.Log(LevelError, "stream quota: saying this VM is alive: "+err.Error())
	}
}

// alive writes now into this instance's alive slot, first taking one if
// it has none or another instance took it while this one was silent.
func (q *Quota) alive(h Host, now time.Time) error {
	stamp := []byte(q.nonce + fieldSep + strconv.FormatInt(now.UnixMilli(), 10))
	if q.instance != "" {
		for range casAttempts {
			v, cas, err := h.SharedData(slotKey(aliveTable, q.aliveSlot))
			if err != nil {
				return err
			}
			if nonce, _, _ := strings.Cut(string(v), fieldSep); nonce != q.nonce {
				break // taken: this instance's counts were dropped as dead
			}
			ok, err := h.SetSharedData(slotKey(aliveTable, q.aliveSlot), stamp, cas)
			if err != nil {
				return err
			}
			if ok {
				q.lastAlive = now
				return nil
			}
		}
	}
	f := fnv.New32a()
	f.Write([]byte(q.nonce))
	start := f.Sum32() % aliveSlots
	for i := range uint32(aliveSlots) {
		s := (start + i) % aliveSlots
		v, cas, err := h.SharedData(slotKey(aliveTable, s))
		if err != nil {
			return err
		}
		if _, fresh := aliveAt(v, now); fresh {
			continue
		}
		ok, err := h.SetSharedData(slotKey(aliveTable, s), stamp, cas)
		if err != nil {
			return err
		}
		if ok {
			q.aliveSlot, q.instance, q.lastAlive = s, strconv.FormatUint(uint64(s), 10)+"."+q.nonce, now
			startSweep(h)
			return nil
		}
	}
	return errTableFull
}

// aliveAt reads an alive entry: its nonce, and whether it said it was
// alive within AliveTimeout of now. An entry never written or garbled is
// not fresh.
func aliveAt(v []byte, now time.Time) (nonce string, fresh bool) {
	nonce, ms, ok := strings.Cut(string(v), fieldSep)
	t, err := strconv.ParseInt(ms, 10, 64)
	if !ok || err != nil {
		return "", false
	}
	return nonce, now.Sub(time.UnixMilli(t)) <= AliveTimeout
}

// liveness tells, during one admission, which instances named in counts
// are alive, reading each one's alive slot at most once.
type liveness struct {
	h     Host
	now   time.Time
	self  string
	known map[string]bool
}

func (l *liveness) isAlive(instance string) bool {
	if instance == l.self {
		return true
	}
	if alive, ok := l.known[instance]; ok {
		return alive
	}
	alive := true
	slot, nonce, ok := strings.Cut(instance, ".")
	s, err := strconv.ParseUint(slot, 10, 32)
	if !ok || err != nil || s >= aliveSlots {
		alive = false
	} else if v, _, err := l.h.SharedData(slotKey(aliveTable, uint32(s))); err == nil {
		got, fresh := aliveAt(v, l.now)
		alive = fresh && got == nonce
	}
	// A slot it cannot read keeps the instance alive: a count too high
	// refuses, one too low would admit.
	if l.known == nil {
		l.known = map[string]bool{}
	}
	l.known[instance] = alive
	return alive
}

// total is the streams of c's live instances.
func (l *liveness) total(c counts) uint64 {
	var n uint64
	for inst, k := range c {
		if k > 0 && l.isAlive(inst) {
			n += k
		}
	}
	return n
}

// dropDead removes the counts of dead instances from c and returns how
// many streams they counted.
func (l *liveness) dropDead(c counts) uint64 {
	var n uint64
	for inst, k := range c {
		if !l.isAlive(inst) {
			n += k
			delete(c, inst)
		}
	}
	return n
}

func (c counts) sum() uint64 {
	var n uint64
	for _, k := range c {
		n += k
	}
	return n
}

// counts are one identity's live streams by VM instance, kept in a
// streams entry as "instance=n" fields separated by commas ("-" for none).
type counts map[string]uint64

func parseCounts(v string) counts {
	c := counts{}
	for f := range strings.SplitSeq(v, ",") {
		inst, n, ok := strings.Cut(f, "=")
		if k, err := strconv.ParseUint(n, 10, 64); ok && inst != "" && err == nil && k > 0 {
			c[inst] = k
		}
	}
	return c
}

// String writes the counts in a fixed order, leaving out the zeros.
func (c counts) String() string {
	var b strings.Builder
	for _, inst := range slices.Sorted(maps.Keys(c)) {
		if c[inst] == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(inst + "=" + strconv.FormatUint(c[inst], 10))
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}
