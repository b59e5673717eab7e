package auth

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"strconv"

	"github.com/directpipe/directpipe/filter/contract"
)

// maxStreamQuota bounds max_streams and its per-identity values.
const maxStreamQuota = 1_000_000

func checkStreamQuota(p *contract.Policy) error {
	if p.MaxStreams < 0 || p.MaxStreams > maxStreamQuota {
		return errors.New("max_streams must be 0 to 1000000")
	}
	if len(p.MaxStreamsByIdentity) > contract.MaxQuotaOverrides {
		return errors.New("max_streams_by_identity has too many entries")
	}
	for _, n := range p.MaxStreamsByIdentity {
		if n < 0 || n > maxStreamQuota {
			return errors.New("max_streams_by_identity values must be 0 to 1000000")
		}
	}
	return nil
}

// StreamLimit is how many streams identity may hold open under p, and
// whether p bounds it at all.
func StreamLimit(p *contract.Policy, identity string) (int, bool) {
	if n, ok := p.MaxStreamsByIdentity[identity]; ok {
		return n, true
	}
	return p.MaxStreams, p.MaxStreams > 0
}

// StreamSlot names where identity's count of live streams lives in the
// host's shared data, and the identity's hash within that slot. A slot
// holds one entry per identity with streams open, so counts stay exact,
// and the slots are bounded (contract.MaxStreamSlots per policy).
func StreamSlot(policy, identity string) (key string, id uint64) {
	h := fnv.New64a()
	h.Write([]byte(identity))
	id = h.Sum64()
	return "directpipe/streams/" + policy + "/" + strconv.FormatUint(id%contract.MaxStreamSlots, 16), id
}

// streamEntryBytes is one entry of a slot: the identity's hash and its
// count of live streams.
const streamEntryBytes = 12

// AddStream counts one more stream for id in slot state if that keeps it
// within limit, and returns the slot's new state.
func AddStream(state []byte, id uint64, limit int) (next []byte, ok bool) {
	entries := slotEntries(state)
	if entries[id] >= uint32(limit) {
		return state, false
	}
	entries[id]++
	return encodeSlot(entries), true
}

// RemoveStream counts one stream less for id in slot state; an entry that
// reaches zero leaves the slot.
func RemoveStream(state []byte, id uint64) []byte {
	entries := slotEntries(state)
	if entries[id] <= 1 {
		delete(entries, id)
	} else {
		entries[id]--
	}
	return encodeSlot(entries)
}

// StreamCount is id's count of live streams in slot state.
func StreamCount(state []byte, id uint64) int { return int(slotEntries(state)[id]) }

func slotEntries(state []byte) map[uint64]uint32 {
	out := map[uint64]uint32{}
	for len(state) >= streamEntryBytes {
		out[binary.LittleEndian.Uint64(state)] = binary.LittleEndian.Uint32(state[8:])
		state = state[streamEntryBytes:]
	}
	return out
}

func encodeSlot(entries map[uint64]uint32) []byte {
	out := make([]byte, 0, len(entries)*streamEntryBytes)
	for id, n := range entries {
		out = binary.LittleEndian.AppendUint64(out, id)
		out = binary.LittleEndian.AppendUint32(out, n)
	}
	return out
}
