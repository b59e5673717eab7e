package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"

	"github.com/directpipe/directpipe/filter/contract"
)

// prepareAPIKeys reads the hashes of the API keys.
func (p *Policy) prepareAPIKeys() error {
	for i, k := range p.APIKeys {
		raw, err := hex.DecodeString(k.SHA256)
		if err != nil || len(raw) != sha256.Size {
			return fmt.Errorf("api_keys[%d]: sha256 must be 64 hex digits", i)
		}
		if k.Identity != "" && !HeaderSafe(k.Identity) {
			return fmt.Errorf("api_keys[%d]: identity must be printable, without space at either end", i)
		}
		var ak apiKey
		copy(ak.sum[:], raw)
		ak.identity = k.Identity
		p.apiKeys = append(p.apiKeys, ak)
	}
	return nil
}

type apiKey struct {
	sum      [sha256.Size]byte
	identity string
}

// verifyAPIKey compares the key's hash with every configured hash in
// constant time, without stopping at a match, so timing says nothing about
// which key, or whether any, matched.
func (p *Policy) verifyAPIKey(token string) Decision {
	if len(p.apiKeys) == 0 {
		return Denial(contract.ReasonMalformedToken)
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i, k := range p.apiKeys {
		match = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(sum[:], k.sum[:]), i, match)
	}
	if match < 0 {
		return Denial(contract.ReasonUnknownAPIKey)
	}
	d := Decision{Allow: true, Identity: p.apiKeys[match].identity}
	if p.IdentityHeader != "" && d.Identity != "" {
		d.Set = append(d.Set, [2]string{p.IdentityHeader, d.Identity})
	}
	return d
}
