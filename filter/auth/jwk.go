package auth

import (
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"

	"github.com/directpipe/directpipe/filter/contract"
)

// RSA moduli outside these bounds are refused: under the minimum, keys no
// longer resist factoring; over the maximum, a key only costs verification
// time (no deployed identity provider uses more than 4096 bits).
const (
	minRSABits = 2048
	maxRSABits = 8192
)

// maxRSAExponent is the largest public exponent Go's crypto/rsa verifies
// with; a key over it would fail every signature.
const maxRSAExponent = 1<<31 - 1

// minHMACBytes is the smallest secret each HMAC algorithm takes (RFC 7518
// §3.2: at least the size of the hash).
var minHMACBytes = map[string]int{"HS256": 32, "HS384": 48, "HS512": 64}

// key is a verification key bound to its algorithm: []byte
// for HMAC, *rsa.PublicKey, the uncompressed point ([]byte) for ECDSA or
// ed25519.PublicKey.
type key struct {
	alg      string
	material any
	// spki is the key's DER SubjectPublicKeyInfo, for a host that checks
	// RS* and ES* signatures itself; nil for the other algorithms.
	spki []byte
}

// ecCurve is what an EC algorithm needs of its key.
type ecCurve struct {
	name string // the JWK crv
	size int    // bytes of x and of y
}

// jwkAlgs lists the algorithms each key type may sign with. A key is bound
// to one of them, so a token cannot pick another (algorithm confusion):
// an RSA public key never serves as an HMAC secret.
func jwkAlgs(kty string) ([]string, bool) {
	switch kty {
	case "oct":
		return []string{"HS256", "HS384", "HS512"}, true
	case "RSA":
		return []string{"RS256", "RS384", "RS512", "PS256"}, true
	case "EC":
		return []string{"ES256", "ES384"}, true
	case "OKP":
		return []string{"EdDSA"}, true
	}
	return nil, false
}

func curveOf(alg string) ecCurve {
	if alg == "ES384" {
		return ecCurve{"P-384", 48}
	}
	return ecCurve{"P-256", 32}
}

// CheckJWK reports whether the filter accepts a key, and if not why. The
// control plane's policy validation calls it, so a policy is refused for
// exactly the keys the filter would refuse. Errors never quote key
// material.
func CheckJWK(j contract.JWK) error {
	_, err := parseJWK(j)
	return err
}

// BindAlg gives a key that names no alg (RFC 7517 makes it optional, and
// some identity providers leave it out) the one algorithm its type allows:
// ES256 for EC P-256, ES384 for EC P-384, EdDSA for OKP Ed25519. An RSA key
// could sign with any of RS256, RS384, RS512 and PS256, so it takes
// defaultRSA, which the policy must choose; an HMAC secret must always name
// its algorithm. A key that names an alg is returned as it is. The filter
// binds keys with this, with no RSA default, and so does the control plane
// (with the policy's), so both read a key the same way.
func BindAlg(j contract.JWK, defaultRSA string) (contract.JWK, error) {
	if j.Alg != "" {
		return j, nil
	}
	switch {
	case j.Kty == "EC" && j.Crv == "P-256":
		j.Alg = "ES256"
	case j.Kty == "EC" && j.Crv == "P-384":
		j.Alg = "ES384"
	case j.Kty == "OKP" && j.Crv == "Ed25519":
		j.Alg = "EdDSA"
	case j.Kty == "RSA" && defaultRSA != "":
		j.Alg = defaultRSA
	case j.Kty == "RSA":
		return j, errors.New("an RSA key names no alg and no default RSA algorithm is set")
	default:
		return j, fmt.Errorf("a %q key with crv %q names no alg", j.Kty, j.Crv)
	}
	return j, nil
}

// parseJWK turns a JWK into a verification key by its kty.
func parseJWK(j contract.JWK) (*key, error) {
	j, err := BindAlg(j, "")
	if err != nil {
		return nil, err
	}
	algs, ok := jwkAlgs(j.Kty)
	if !ok {
		return nil, fmt.Errorf("kty %q is not oct, RSA, EC or OKP", j.Kty)
	}
	if !slices.Contains(algs, j.Alg) {
		return nil, fmt.Errorf("alg %q does not go with kty %q", j.Alg, j.Kty)
	}
	b64 := func(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")) }
	switch j.Kty {
	case "RSA":
		n, err1 := b64(j.N)
		e, err2 := b64(j.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 {
			return nil, errors.New("n and e must be base64url")
		}
		if len(e) > 4 {
			return nil, fmt.Errorf("RSA exponent of %d bytes is out of range (odd, 3 to %d)", len(e), maxRSAExponent)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if bits := pub.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return nil, fmt.Errorf("RSA key is %d bits; %d to %d", bits, minRSABits, maxRSABits)
		}
		if pub.N.Bit(0) == 0 {
			return nil, errors.New("RSA modulus is even")
		}
		if pub.E < 3 || pub.E > maxRSAExponent || pub.E%2 == 0 {
			return nil, fmt.Errorf("RSA exponent %d is out of range (odd, 3 to %d)", pub.E, maxRSAExponent)
		}
		k := &key{alg: j.Alg, material: pub}
		if j.Alg != "PS256" {
			k.spki = rsaSPKI(n, pub.E)
		}
		return k, nil
	case "EC":
		c := curveOf(j.Alg)
		if j.Crv != c.name {
			return nil, fmt.Errorf("crv %q does not go with %s (want %s)", j.Crv, j.Alg, c.name)
		}
		x, err1 := b64(j.X)
		y, err2 := b64(j.Y)
		if err1 != nil || err2 != nil || len(x) != c.size || len(y) != c.size {
			return nil, fmt.Errorf("x and y must be %d bytes of base64url for %s", c.size, c.name)
		}
		point := append(append([]byte{4}, x...), y...)
		if !onCurve(j.Alg, point) {
			return nil, fmt.Errorf("the point is not on %s", c.name)
		}
		return &key{alg: j.Alg, material: point, spki: ecSPKI(c.name, x, y)}, nil
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("crv %q: only Ed25519", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("x must be 32 bytes of base64url")
		}
		return &key{alg: j.Alg, material: ed25519.PublicKey(x)}, nil
	default: // oct
		secret, err := b64(j.K)
		if err != nil || len(secret) == 0 {
			return nil, errors.New("k is not base64url")
		}
		if minBytes := minHMACBytes[j.Alg]; len(secret) < minBytes {
			return nil, fmt.Errorf("key is %d bytes; %s needs at least %d", len(secret), j.Alg, minBytes)
		}
		return &key{alg: j.Alg, material: secret}, nil
	}
}

// prepareKeys reads the policy's JWKS.
func (p *Policy) prepareKeys() error {
	p.keys = map[string]*key{}
	if p.JWKS == nil {
		return nil
	}
	for i, jwk := range p.JWKS.Keys {
		k, err := parseJWK(jwk)
		if err != nil {
			return fmt.Errorf("jwks.keys[%d]: %w", i, err)
		}
		if _, dup := p.keys[jwk.Kid]; dup {
			return fmt.Errorf("jwks.keys[%d]: kid %q twice", i, jwk.Kid)
		}
		p.keys[jwk.Kid] = k
		if !slices.Contains(p.algs, k.alg) {
			p.algs = append(p.algs, k.alg)
		}
	}
	return nil
}
