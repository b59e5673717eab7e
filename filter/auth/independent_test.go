package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// TestTokensFromAnIndependentLibrary signs tokens with go-jose, a JOSE
// implementation that shares no code with golang-jwt (which the filter
// verifies with), and has go-jose write each verification key as a JWK:
// the filter must read those keys and accept those tokens, for every
// algorithm it supports, and refuse them once changed.
func TestTokensFromAnIndependentLibrary(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	hmacKey := make([]byte, 64)
	rand.Read(hmacKey)
	tests := []struct {
		alg          jose.SignatureAlgorithm
		signing, pub any
	}{
		{jose.HS256, hmacKey[:32], hmacKey[:32]},
		{jose.HS384, hmacKey[:48], hmacKey[:48]},
		{jose.HS512, hmacKey, hmacKey},
		{jose.RS256, rsaKey, &rsaKey.PublicKey},
		{jose.RS384, rsaKey, &rsaKey.PublicKey},
		{jose.RS512, rsaKey, &rsaKey.PublicKey},
		{jose.PS256, rsaKey, &rsaKey.PublicKey},
		{jose.ES256, p256, &p256.PublicKey},
		{jose.ES384, p384, &p384.PublicKey},
		{jose.EdDSA, edPriv, edPub},
	}
	now := time.Now()
	for _, tt := range tests {
		t.Run(string(tt.alg), func(t *testing.T) {
			jwk, err := json.Marshal(jose.JSONWebKey{Key: tt.pub, KeyID: "k-" + string(tt.alg), Algorithm: string(tt.alg)})
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseConfig([]byte(`{"sources":[{"bearer":true}],"jwks":{"keys":[` + string(jwk) + `]}}`))
			if err != nil {
				t.Fatalf("the filter refuses go-jose's JWK %s: %v", jwk, err)
			}
			signer, err := jose.NewSigner(jose.SigningKey{Algorithm: tt.alg, Key: tt.signing},
				(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k-"+string(tt.alg)))
			if err != nil {
				t.Fatal(err)
			}
			token, err := josejwt.Signed(signer).Claims(josejwt.Claims{
				Subject: "alice", Expiry: josejwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: josejwt.NewNumericDate(now),
			}).Serialize()
			if err != nil {
				t.Fatal(err)
			}
			check := func(tok string) Decision {
				d, _ := cfg.Check("", Request{Header: headers("authorization", "Bearer "+tok)}, now)
				return d
			}
			if d := check(token); !d.Allow || d.Identity != "alice" {
				t.Errorf("go-jose's token refused: %+v", d)
			}
			if d := check(tamper(token)); d.Allow {
				t.Error("a changed token verified")
			}
		})
	}
}
