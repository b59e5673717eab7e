package policy

import (
	"crypto/ecdh"
	"encoding/base64"
	"fmt"
	"math/big"
	"strings"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// minRSABits refuses keys that no longer resist factoring.
const minRSABits = 2048

// algsByKty lists the algorithms each key type may sign with. A key is
// bound to one of them, so a token cannot pick another (algorithm
// confusion).
var algsByKty = map[string]map[string]int{
	// value: the minimum HMAC key size in bytes (RFC 7518 §3.2), else 0.
	"oct": {"HS256": 32, "HS384": 48, "HS512": 64},
	"RSA": {"RS256": 0, "RS384": 0, "RS512": 0, "PS256": 0},
	"EC":  {"ES256": 0, "ES384": 0},
	"OKP": {"EdDSA": 0},
}

var curveByAlg = map[string]string{"ES256": "P-256", "ES384": "P-384"}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// ValidateJWK checks one verification key: its type, its algorithm and
// that its material is a usable key of that type.
func ValidateJWK(k *policyv1.JWK) error {
	algs, ok := algsByKty[k.GetKty()]
	if !ok {
		return fmt.Errorf("kty %q is not oct, RSA, EC or OKP", k.GetKty())
	}
	minBytes, ok := algs[k.GetAlg()]
	if !ok {
		return fmt.Errorf("alg %q does not go with kty %q", k.GetAlg(), k.GetKty())
	}
	switch k.GetKty() {
	case "oct":
		secret, err := b64(k.GetK())
		if err != nil {
			return fmt.Errorf("k is not base64url: %w", err)
		}
		if len(secret) < minBytes {
			return fmt.Errorf("key is %d bytes; %s needs at least %d", len(secret), k.GetAlg(), minBytes)
		}
	case "RSA":
		n, err1 := b64(k.GetN())
		e, err2 := b64(k.GetE())
		if err1 != nil || err2 != nil || len(e) == 0 {
			return fmt.Errorf("n and e must be base64url")
		}
		if bits := new(big.Int).SetBytes(n).BitLen(); bits < minRSABits {
			return fmt.Errorf("RSA key is %d bits; at least %d", bits, minRSABits)
		}
	case "EC":
		if k.GetCrv() != curveByAlg[k.GetAlg()] {
			return fmt.Errorf("crv %q does not go with %s (want %s)", k.GetCrv(), k.GetAlg(), curveByAlg[k.GetAlg()])
		}
		x, err1 := b64(k.GetX())
		y, err2 := b64(k.GetY())
		if err1 != nil || err2 != nil {
			return fmt.Errorf("x and y must be base64url")
		}
		curve := map[string]ecdh.Curve{"P-256": ecdh.P256(), "P-384": ecdh.P384()}[k.GetCrv()]
		size := map[string]int{"P-256": 32, "P-384": 48}[k.GetCrv()]
		if len(x) != size || len(y) != size {
			return fmt.Errorf("x and y must be %d bytes for %s", size, k.GetCrv())
		}
		point := append(append([]byte{4}, x...), y...)
		if _, err := curve.NewPublicKey(point); err != nil {
			return fmt.Errorf("the point is not on %s", k.GetCrv())
		}
	case "OKP":
		if k.GetCrv() != "Ed25519" {
			return fmt.Errorf("crv %q: only Ed25519", k.GetCrv())
		}
		if x, err := b64(k.GetX()); err != nil || len(x) != 32 {
			return fmt.Errorf("x must be 32 bytes of base64url")
		}
	}
	return nil
}
