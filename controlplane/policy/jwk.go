package policy

import (
	"encoding/base64"
	"fmt"
	"strings"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// minHMACBytes is the smallest secret each HMAC algorithm may use (RFC
// 7518 §3.2: at least the size of the hash). Policy is stricter than the
// filter here: the filter also reads hand-written static configurations,
// and refusing their short secrets would change what they accept.
var minHMACBytes = map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}

// FilterJWK is a policy key in the form the handshake filter reads it.
// Base64url padding is dropped: the filter accepts it, and a key written
// with or without it is then the same document.
func FilterJWK(k *policyv1.JWK) contract.JWK {
	trim := func(s string) string { return strings.TrimRight(s, "=") }
	return contract.JWK{
		Kty: k.GetKty(), Kid: k.GetKid(), Alg: k.GetAlg(), K: trim(k.GetK()),
		N: trim(k.GetN()), E: trim(k.GetE()), Crv: k.GetCrv(), X: trim(k.GetX()), Y: trim(k.GetY()),
	}
}

// ValidateJWK checks one verification key with the filter's own parser, so
// a policy is refused for every key the filter would refuse, and then
// asks HMAC secrets for their full length.
func ValidateJWK(k *policyv1.JWK) error {
	j := FilterJWK(k)
	if err := auth.CheckJWK(j); err != nil {
		return err
	}
	if minBytes := minHMACBytes[j.Alg]; j.Kty == "oct" {
		secret, _ := base64.RawURLEncoding.DecodeString(j.K) // CheckJWK has read it
		if len(secret) < minBytes {
			return fmt.Errorf("key is %d bytes; %s needs at least %d", len(secret), j.Alg, minBytes)
		}
	}
	return nil
}
