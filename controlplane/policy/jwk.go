package policy

import (
	"slices"
	"strings"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/filter/auth"
	"github.com/directpipe/directpipe/filter/contract"
)

// RSAAlgs are the algorithms default_rsa_alg may name: those the filter
// verifies with an RSA key.
var RSAAlgs = []string{"RS256", "RS384", "RS512", "PS256"}

// FilterJWK is a policy key in the form the handshake filter reads it, its
// algorithm bound (auth.BindAlg, with the policy's default RSA algorithm)
// so that the filter is always told which one. Base64url padding is
// dropped: the filter accepts it, and a key written with or without it is
// then the same document. A key that cannot be bound is returned without
// alg, and the filter's parser says why.
func FilterJWK(k *policyv1.JWK, defaultRSA string) contract.JWK {
	trim := func(s string) string { return strings.TrimRight(s, "=") }
	j := contract.JWK{
		Kty: k.GetKty(), Kid: k.GetKid(), Alg: k.GetAlg(), K: trim(k.GetK()),
		N: trim(k.GetN()), E: trim(k.GetE()), Crv: k.GetCrv(), X: trim(k.GetX()), Y: trim(k.GetY()),
	}
	if bound, err := auth.BindAlg(j, defaultRSA); err == nil {
		return bound
	}
	return j
}

// ValidateJWK checks one verification key with the filter's own parser, so
// a policy is refused for exactly the keys the filter would refuse (HMAC
// secrets shorter than their hash included).
func ValidateJWK(k *policyv1.JWK, defaultRSA string) error {
	j := FilterJWK(k, defaultRSA)
	if j.Alg == "" {
		_, err := auth.BindAlg(j, defaultRSA)
		return err
	}
	return auth.CheckJWK(j)
}

// validRSAAlg reports whether alg may be a default RSA algorithm.
func validRSAAlg(alg string) bool { return slices.Contains(RSAAlgs, alg) }
