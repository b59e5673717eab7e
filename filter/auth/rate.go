package auth

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"strconv"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// maxRate bounds a configured rate and burst: far above any handshake rate
// a person or agent needs, low enough that the bucket's arithmetic stays
// exact.
const maxRate = 1_000_000

func checkRate(r *contract.Rate) error {
	if r == nil {
		return nil
	}
	if !(r.PerSecond > 0 && r.PerSecond <= maxRate) {
		return errors.New("handshake_rate.per_second must be above 0 and at most 1000000")
	}
	if r.Burst < 1 || r.Burst > maxRate {
		return errors.New("handshake_rate.burst must be 1 to 1000000")
	}
	return nil
}

// RateKey is where an identity's bucket lives in the host's shared data:
// identities are hashed into contract.MaxRateSlots slots per policy, so the
// state stays bounded whatever identities arrive. Two identities in one
// slot share a bucket; with few active identities per slot that is rare.
func RateKey(policy, identity string) string {
	h := fnv.New64a()
	h.Write([]byte(identity))
	return "directpipe/rate/" + policy + "/" + strconv.FormatUint(h.Sum64()%contract.MaxRateSlots, 16)
}

// rateStateBytes is a bucket's encoding: its tokens (float64 bits) and the
// time they were counted (Unix nanoseconds).
const rateStateBytes = 16

// TakeToken spends one token of the bucket in state at now. It returns the
// bucket's new state, whether a token was there, and, when none was, how
// long until one is. An empty or unreadable state is a full bucket.
func TakeToken(r contract.Rate, state []byte, now time.Time) (next []byte, ok bool, retryAfter time.Duration) {
	tokens, at := float64(r.Burst), now.UnixNano()
	if len(state) == rateStateBytes {
		t := math.Float64frombits(binary.LittleEndian.Uint64(state))
		last := int64(binary.LittleEndian.Uint64(state[8:]))
		if t >= 0 && t <= float64(r.Burst) && last <= at {
			tokens = min(float64(r.Burst), t+float64(at-last)/1e9*r.PerSecond)
		}
	}
	if ok = tokens >= 1; ok {
		tokens--
	} else {
		retryAfter = time.Duration((1 - tokens) / r.PerSecond * 1e9)
	}
	next = make([]byte, rateStateBytes)
	binary.LittleEndian.PutUint64(next, math.Float64bits(tokens))
	binary.LittleEndian.PutUint64(next[8:], uint64(at))
	return next, ok, retryAfter
}
