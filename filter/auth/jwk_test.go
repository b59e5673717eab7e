package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/filter/contract"
)

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// keyConfig builds a one-policy config from JWKs and extra policy fields.
func keyConfig(t *testing.T, keys []map[string]string, extra map[string]any) *Config {
	t.Helper()
	pol := map[string]any{
		"sources": []map[string]any{{"subprotocol_prefix": "dp.bearer."}, {"bearer": true}},
		"jwks":    map[string]any{"keys": keys},
	}
	for k, v := range extra {
		pol[k] = v
	}
	data, _ := json.Marshal(map[string]any{"routes": map[string]string{"r": "p"}, "policies": map[string]any{"p": pol}})
	cfg, err := ParseConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAsymmetricKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	pad := func(n *big.Int, size int) []byte { return n.FillBytes(make([]byte, size)) }
	rsaJWK := func(alg string) map[string]string {
		return map[string]string{"kty": "RSA", "kid": "rsa-" + alg, "alg": alg, "n": b64u(rsaKey.N.Bytes()), "e": b64u(big.NewInt(int64(rsaKey.E)).Bytes())}
	}
	keys := []map[string]string{
		rsaJWK("RS256"), rsaJWK("PS256"),
		{"kty": "EC", "kid": "ec", "alg": "ES256", "crv": "P-256", "x": b64u(pad(ecKey.X, 32)), "y": b64u(pad(ecKey.Y, 32))},
		{"kty": "EC", "kid": "ec384", "alg": "ES384", "crv": "P-384", "x": b64u(pad(ec384.X, 48)), "y": b64u(pad(ec384.Y, 48))},
		{"kty": "OKP", "kid": "ed", "alg": "EdDSA", "crv": "Ed25519", "x": b64u(edPub)},
	}
	cfg := keyConfig(t, keys, nil)
	sign := func(m jwt.SigningMethod, kid string, k crypto.PrivateKey) string { return signKid(t, m, kid, k) }
	tests := []struct {
		name  string
		token string
		allow bool
	}{
		{"RS256", sign(jwt.SigningMethodRS256, "rsa-RS256", rsaKey), true},
		{"PS256", sign(jwt.SigningMethodPS256, "rsa-PS256", rsaKey), true},
		{"ES256", sign(jwt.SigningMethodES256, "ec", ecKey), true},
		{"ES384", sign(jwt.SigningMethodES384, "ec384", ec384), true},
		{"EdDSA", sign(jwt.SigningMethodEdDSA, "ed", edPriv), true},
		{"RS256 under the PS256 key", sign(jwt.SigningMethodRS256, "rsa-PS256", rsaKey), false},
		{"ES256 under the Ed25519 key", sign(jwt.SigningMethodES256, "ed", ecKey), false},
		// The classic confusion: HMAC keyed with the RSA public key's bytes.
		{"HS256 keyed with the RSA modulus", sign(jwt.SigningMethodHS256, "rsa-RS256", rsaKey.N.Bytes()), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := cfg.Check("r", Request{Header: headers("authorization", "Bearer "+tt.token)}, now)
			if d.Allow != tt.allow {
				t.Errorf("decision %+v, want allow=%v", d, tt.allow)
			}
		})
	}
}

func TestBadAsymmetricKeysRefused(t *testing.T) {
	for name, k := range map[string]map[string]string{
		"small rsa":    {"kty": "RSA", "alg": "RS256", "n": b64u(big.NewInt(1<<62 - 1).Bytes()), "e": "AQAB"},
		"rsa with HS":  {"kty": "RSA", "alg": "HS256", "n": "AQAB", "e": "AQAB"},
		"ec off curve": {"kty": "EC", "alg": "ES256", "crv": "P-256", "x": b64u(make([]byte, 32)), "y": b64u(make([]byte, 32))},
		"ec wrong crv": {"kty": "EC", "alg": "ES256", "crv": "P-384", "x": "AA", "y": "AA"},
		"ed short":     {"kty": "OKP", "alg": "EdDSA", "crv": "Ed25519", "x": "AAAA"},
		"unknown kty":  {"kty": "foo", "alg": "RS256"},
		// Go's crypto/rsa verifies with odd exponents up to 2^31-1 only: a
		// key outside would fail every token, so it is refused up front.
		"rsa exponent even":       rsaKeyJWK(65536),
		"rsa exponent over 2^31":  rsaKeyJWK(1 << 31),
		"rsa exponent 5 bytes":    {"kty": "RSA", "alg": "RS256", "n": b64u(rsaModulus()), "e": "AQAAAAE"},
		"rsa exponent 1":          rsaKeyJWK(1),
		"rsa modulus 16384 bits":  {"kty": "RSA", "alg": "RS256", "n": b64u(append([]byte{0xc1}, make([]byte, 2047)...)), "e": "AQAB"},
		"rsa without alg":         {"kty": "RSA", "n": b64u(rsaModulus()), "e": "AQAB"},
		"hmac without alg":        {"kty": "oct", "k": b64u(make([]byte, 32))},
		"HS256 of 31 bytes":       {"kty": "oct", "alg": "HS256", "k": b64u(make([]byte, 31))},
		"HS384 of 47 bytes":       {"kty": "oct", "alg": "HS384", "k": b64u(make([]byte, 47))},
		"HS512 of 63 bytes":       {"kty": "oct", "alg": "HS512", "k": b64u(make([]byte, 63))},
		"ec without alg on P-521": {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
	} {
		t.Run(name, func(t *testing.T) {
			data, _ := json.Marshal(map[string]any{"routes": map[string]string{}, "policies": map[string]any{"p": map[string]any{
				"sources": []map[string]any{{"bearer": true}}, "jwks": map[string]any{"keys": []map[string]string{k}},
			}}})
			if _, err := ParseConfig(data); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// rsaModulus is an odd 2048-bit number: a modulus the parser accepts.
func rsaModulus() []byte {
	n := make([]byte, 256)
	n[0], n[255] = 0xc1, 0x01
	return n
}

func rsaKeyJWK(e int64) map[string]string {
	return map[string]string{"kty": "RSA", "alg": "RS256", "n": b64u(rsaModulus()), "e": b64u(big.NewInt(e).Bytes())}
}

// TestKeysWithoutAlg: keys that name no alg, as some identity providers
// publish them, are bound by kty and crv, and verify only that algorithm.
func TestKeysWithoutAlg(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	pad := func(n *big.Int, size int) []byte { return n.FillBytes(make([]byte, size)) }
	cfg := keyConfig(t, []map[string]string{
		{"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64u(pad(ecKey.X, 32)), "y": b64u(pad(ecKey.Y, 32))},
		{"kty": "EC", "kid": "ec384", "crv": "P-384", "x": b64u(pad(ec384.X, 48)), "y": b64u(pad(ec384.Y, 48))},
		{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64u(edPub)},
	}, nil)
	sign := func(m jwt.SigningMethod, kid string, k crypto.PrivateKey) string { return signKid(t, m, kid, k) }
	for _, tt := range []struct {
		name  string
		token string
		allow bool
	}{
		{"ES256 by the P-256 key", sign(jwt.SigningMethodES256, "ec", ecKey), true},
		{"ES384 by the P-384 key", sign(jwt.SigningMethodES384, "ec384", ec384), true},
		{"EdDSA by the Ed25519 key", sign(jwt.SigningMethodEdDSA, "ed", edPriv), true},
		{"ES384 under the P-256 key", sign(jwt.SigningMethodES384, "ec", ec384), false},
		{"HS256 keyed with the EC key's x", sign(jwt.SigningMethodHS256, "ec", pad(ecKey.X, 32)), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := cfg.Check("r", Request{Header: headers("authorization", "Bearer "+tt.token)}, now)
			if d.Allow != tt.allow {
				t.Errorf("decision %+v, want allow=%v", d, tt.allow)
			}
		})
	}
	for _, tt := range []struct {
		kty, crv, rsa, want string
	}{
		{"EC", "P-256", "", "ES256"}, {"EC", "P-384", "", "ES384"}, {"OKP", "Ed25519", "", "EdDSA"},
		{"RSA", "", "PS256", "PS256"}, {"RSA", "", "", ""}, {"oct", "", "RS256", ""}, {"EC", "P-521", "", ""},
	} {
		got, err := BindAlg(contract.JWK{Kty: tt.kty, Crv: tt.crv}, tt.rsa)
		if (tt.want == "") != (err != nil) || (err == nil && got.Alg != tt.want) {
			t.Errorf("BindAlg(%s %s, %q) = %q, %v; want %q", tt.kty, tt.crv, tt.rsa, got.Alg, err, tt.want)
		}
	}
}

// signKid signs a valid token with k under kid.
func signKid(t *testing.T, m jwt.SigningMethod, kid string, k crypto.PrivateKey) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, valid())
	tok.Header["kid"] = kid
	s, err := tok.SignedString(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
