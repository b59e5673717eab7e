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
	sign := func(m jwt.SigningMethod, kid string, k crypto.PrivateKey) string {
		tok := jwt.NewWithClaims(m, valid())
		tok.Header["kid"] = kid
		s, err := tok.SignedString(k)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
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
