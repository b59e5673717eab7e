package auth

import (
	"testing"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

func TestTakeToken(t *testing.T) {
	r := contract.Rate{PerSecond: 2, Burst: 3}
	t0 := time.Unix(1000, 0)
	steps := []struct {
		at    time.Duration
		ok    bool
		retry time.Duration
	}{
		{0, true, 0},                       // 3 -> 2
		{0, true, 0},                       // 2 -> 1
		{0, true, 0},                       // 1 -> 0
		{0, false, 500 * time.Millisecond}, // empty: one token in 0.5 s
		{250 * time.Millisecond, false, 250 * time.Millisecond}, // half a token back
		{500 * time.Millisecond, true, 0},                       // one token back
		{10 * time.Second, true, 0},                             // refilled to the burst, not beyond
		{10 * time.Second, true, 0},
		{10 * time.Second, true, 0},
		{10 * time.Second, false, 500 * time.Millisecond},
	}
	var state []byte
	for i, s := range steps {
		var ok bool
		var retry time.Duration
		state, ok, retry = TakeToken(r, state, t0.Add(s.at))
		if ok != s.ok || retry != s.retry {
			t.Errorf("step %d at %v: ok %v retry %v, want %v %v", i, s.at, ok, retry, s.ok, s.retry)
		}
	}
}

func TestTakeTokenBadState(t *testing.T) {
	r := contract.Rate{PerSecond: 1, Burst: 1}
	now := time.Unix(1000, 0)
	for _, state := range [][]byte{nil, {1, 2, 3}, make([]byte, 17)} {
		if _, ok, _ := TakeToken(r, state, now); !ok {
			t.Errorf("state %v: want a full bucket", state)
		}
	}
	// A state from the future (a clock step back) is not trusted either.
	future, _, _ := TakeToken(r, nil, now.Add(time.Hour))
	if _, ok, _ := TakeToken(r, future, now); !ok {
		t.Error("a bucket dated in the future must read as full")
	}
}

func TestRateKeyBounded(t *testing.T) {
	seen := map[string]bool{}
	for i := range 100000 {
		seen[RateKey("p", string(rune(i)))] = true
	}
	if len(seen) > contract.MaxRateSlots {
		t.Errorf("%d keys, want at most %d", len(seen), contract.MaxRateSlots)
	}
}

func TestCheckRate(t *testing.T) {
	for _, tt := range []struct {
		r  *contract.Rate
		ok bool
	}{
		{nil, true},
		{&contract.Rate{PerSecond: 1, Burst: 1}, true},
		{&contract.Rate{PerSecond: 0.5, Burst: 10}, true},
		{&contract.Rate{PerSecond: 0, Burst: 1}, false},
		{&contract.Rate{PerSecond: 1, Burst: 0}, false},
		{&contract.Rate{PerSecond: 2e6, Burst: 1}, false},
	} {
		if err := checkRate(tt.r); (err == nil) != tt.ok {
			t.Errorf("%+v: %v", tt.r, err)
		}
	}
}
