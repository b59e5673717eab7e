package gate

import (
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// An admission drops a dead instance's counts only from the entries it
// writes, so the streams of a failed VM would stay on an identity's gauge
// (what dpctl top and the split by use read) until that identity is
// admitted again on this Envoy or its slot is taken. The sweep drops them
// without waiting for either: every tick takes the next stretch of the
// streams table, round-robin, and writes back each entry that counts a
// dead instance, taking its streams off the gauge in the same step.
//
// The stretch is claimed through one shared cursor, so the workers of an
// Envoy share the pass instead of each repeating it, and the cursor only
// exists once a VM of the Envoy has counted a stream under a quota: an
// Envoy whose policies hold no quota pays one shared-data read a tick.
const sweepCursor = "directpipe.quota_sweep"

// SweepSlotsPerSecond is how many streams-table slots one plugin's tick
// sweeps a second: a whole pass of contract.QuotaSlots in about 26 s on
// an Envoy with a single worker and plugin, sooner with more. sweepPerTick
// keeps that rate whatever the tick period of the build.
const (
	SweepSlotsPerSecond = 160
	sweepPerTick        = max(1, SweepSlotsPerSecond*TickMillis/1000)
)

// SweepPassBound is how long a full pass of the streams table takes on an
// Envoy with one ticking plugin whose ticks come on time; tests wait a
// multiple of it, as a loaded host delays ticks.
const SweepPassBound = (contract.QuotaSlots + SweepSlotsPerSecond - 1) / SweepSlotsPerSecond * time.Second

// sweepDead drops the counts of dead instances from the next
// sweepPerTick slots of the streams table. It is bounded per call: one
// cursor read and write, then one read per slot and one write per slot
// that counts a dead instance (a few more under contention).
func sweepDead(h Host, now time.Time) {
	v, cas, err := h.SharedData(sweepCursor)
	if err != nil || len(v) == 0 {
		return
	}
	start, err := strconv.ParseUint(string(v), 10, 32)
	if err != nil {
		start = 0 // garbled: start over rather than stop sweeping
	}
	start %= contract.QuotaSlots
	next := []byte(strconv.FormatUint((start+sweepPerTick)%contract.QuotaSlots, 10))
	if ok, err := h.SetSharedData(sweepCursor, next, cas); err != nil || !ok {
		return // another worker claimed this stretch; the next tick takes the one after
	}
	lv := liveness{h: h, now: now}
	for i := range uint64(sweepPerTick) {
		slot := uint32((start + i) % contract.QuotaSlots)
		if err := dropDeadIn(h, slot, &lv); err != nil {
			h.Log(LevelWarn, "stream quota sweep: slot "+strconv.FormatUint(uint64(slot), 10)+": "+err.Error())
			return
		}
	}
}

// dropDeadIn writes back the streams entry in slot without the counts of
// the instances lv finds dead, and takes them off the entry's gauge.
// Only the write that drops a count takes it off the gauge, so an
// admission dropping the same count at the same time cannot take it off
// twice.
func dropDeadIn(h Host, slot uint32, lv *liveness) error {
	key := slotKey(streamsTable, slot)
	for range casAttempts {
		v, cas, err := h.SharedData(key)
		if err != nil {
			return err
		}
		f := strings.SplitN(string(v), fieldSep, streamsFields)
		if len(f) != streamsFields {
			return nil // never written, or not an entry: nothing counted
		}
		c := parseCounts(f[0])
		gone := lv.dropDead(c)
		if gone == 0 {
			return nil
		}
		gauged := f[1] == "1"
		ok, err := h.SetSharedData(key, streamsEntry(c, gauged, f[2]), cas)
		if err != nil {
			return err
		}
		if ok {
			h.AddGauge(gaugeOf(f[2], gauged), -int64(gone))
			return nil
		}
	}
	return errCASExhausted
}

// startSweep creates the sweep's cursor if no VM of the Envoy has yet:
// called when an instance takes an alive slot, before it counts a stream.
func startSweep(h Host) {
	v, cas, err := h.SharedData(sweepCursor)
	if err != nil || len(v) > 0 {
		return
	}
	// A lost race means another VM created it.
	h.SetSharedData(sweepCursor, []byte("0"), cas)
}
