package auth

import (
	"crypto/sha256"
	"slices"
	"time"
)

// Token cache defaults. An entry never outlives its token's exp; the
// maximum age bounds how long a decision made under one clock reading is
// reused, and the entry count bounds memory (about 200 bytes an entry).
const (
	DefaultTokenCacheEntries = 1024
	DefaultTokenCacheMaxAge  = 5 * time.Minute
)

// CacheResult says whether a decision came from the token cache.
type CacheResult uint8

const (
	CacheNone CacheResult = iota // no cache was asked: no JWT, or the cache is off
	CacheHit
	CacheMiss
)

// tokenCache remembers the allow decisions of verified JWTs, keyed by the
// SHA-256 of the token, so a caller reconnecting with the same token skips
// the JSON decoding and the signature check. It belongs to one Policy, so
// a new configuration (new keys, issuer, audiences, claim headers) starts
// with an empty cache. A Wasm VM is single-threaded: no locking.
type tokenCache struct {
	max     int
	maxAge  time.Duration
	entries map[[sha256.Size]byte]cachedDecision
	// ring holds keys in insertion order; when the cache is full, the
	// oldest insertion is evicted. A key may appear twice after an
	// expired entry was replaced: evicting it early costs one miss.
	ring []([sha256.Size]byte)
	next int
}

type cachedDecision struct {
	d     Decision
	until time.Time // the earlier of exp (with leeway) and insertion + maxAge
}

func newTokenCache(entries int, maxAge time.Duration) *tokenCache {
	if entries <= 0 || maxAge <= 0 {
		return nil
	}
	return &tokenCache{max: entries, maxAge: maxAge, entries: make(map[[sha256.Size]byte]cachedDecision)}
}

// get returns the cached decision for a token still valid at now.
func (c *tokenCache) get(sum [sha256.Size]byte, now time.Time) (Decision, bool) {
	e, ok := c.entries[sum]
	if !ok {
		return Decision{}, false
	}
	if !now.Before(e.until) {
		delete(c.entries, sum)
		return Decision{}, false
	}
	d := e.d
	d.Until = e.until
	return d, true
}

// put remembers an allow decision until the earlier of exp and now plus
// the maximum age.
func (c *tokenCache) put(sum [sha256.Size]byte, d Decision, exp, now time.Time) {
	until := now.Add(c.maxAge)
	if exp.Before(until) {
		until = exp
	}
	if !now.Before(until) {
		return
	}
	// Callers append to Set; a clipped slice makes them copy it first.
	d.Set = slices.Clip(d.Set)
	if _, ok := c.entries[sum]; !ok {
		if len(c.ring) < c.max {
			c.ring = append(c.ring, sum)
		} else {
			delete(c.entries, c.ring[c.next])
			c.ring[c.next] = sum
			c.next = (c.next + 1) % c.max
		}
	}
	c.entries[sum] = cachedDecision{d: d, until: until}
}

// len is the number of entries, expired ones included.
func (c *tokenCache) len() int { return len(c.entries) }
