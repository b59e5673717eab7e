package auth

import (
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

func TestStreamSlotCounts(t *testing.T) {
	_, a := StreamSlot("p", "alice")
	_, b := StreamSlot("p", "bob")
	var state []byte
	steps := []struct {
		op    string // "add" or "remove"
		id    uint64
		limit int
		ok    bool
		count int // id's count after the step
	}{
		{"add", a, 2, true, 1},
		{"add", a, 2, true, 2},
		{"add", a, 2, false, 2},
		{"add", b, 1, true, 1}, // another identity in the same state keeps its own count
		{"remove", a, 0, true, 1},
		{"add", a, 2, true, 2},
		{"remove", a, 0, true, 1},
		{"remove", a, 0, true, 0},
		{"remove", a, 0, true, 0}, // one more end than starts: no negative count
		{"add", a, 0, false, 0},   // a limit of 0: no stream at all
	}
	for i, s := range steps {
		ok := true
		if s.op == "add" {
			state, ok = AddStream(state, s.id, s.limit)
		} else {
			state = RemoveStream(state, s.id)
		}
		if ok != s.ok || StreamCount(state, s.id) != s.count {
			t.Errorf("step %d (%s): ok %v count %d, want %v %d", i, s.op, ok, StreamCount(state, s.id), s.ok, s.count)
		}
	}
	if StreamCount(state, b) != 1 || len(state) != streamEntryBytes {
		t.Errorf("left %d bytes with bob at %d: ended identities must leave the slot", len(state), StreamCount(state, b))
	}
}

func TestStreamLimit(t *testing.T) {
	p := &contract.Policy{MaxStreams: 2, MaxStreamsByIdentity: map[string]int{"vip": 10, "suspended": 0}}
	for _, tt := range []struct {
		identity string
		limit    int
		bounded  bool
	}{
		{"alice", 2, true},
		{"vip", 10, true},
		{"suspended", 0, true},
	} {
		if l, b := StreamLimit(p, tt.identity); l != tt.limit || b != tt.bounded {
			t.Errorf("%s: %d %v, want %d %v", tt.identity, l, b, tt.limit, tt.bounded)
		}
	}
	if _, b := StreamLimit(&contract.Policy{MaxStreamsByIdentity: map[string]int{"vip": 1}}, "alice"); b {
		t.Error("without max_streams, an identity without an override is not bounded")
	}
}
