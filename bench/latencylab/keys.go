//go:build linux

package latencylab

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"math/big"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/envoy/testkit/jwtmint"
)

// signingKeys are the lab's own asymmetric keys, made fresh each run.
type signingKeys struct {
	rsa *rsa.PrivateKey
	ec  *ecdsa.PrivateKey
}

func newSigningKeys(t testkit.T) signingKeys {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signingKeys{rsa: r, ec: e}
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwksYAML lists the public halves as policy JWKs, one per line.
func (k signingKeys) jwksYAML(indent string) string {
	return fmt.Sprintf("%s- { kty: RSA, kid: rsa, alg: RS256, n: %s, e: %s }\n%s- { kty: EC, kid: ec, alg: ES256, crv: P-256, x: %s, y: %s }\n",
		indent, b64u(k.rsa.N.Bytes()), b64u(big.NewInt(int64(k.rsa.E)).Bytes()),
		indent, b64u(k.ec.X.FillBytes(make([]byte, 32))), b64u(k.ec.Y.FillBytes(make([]byte, 32))))
}

// jwksJSON is the JWKS Envoy's jwt_authn verifies the lab's tokens with:
// the demo HMAC key and the public halves, with the policy's kids.
func (k signingKeys) jwksJSON() string {
	return fmt.Sprintf(`{"keys":[{"kty":"oct","kid":"%s","alg":"HS256","k":"%s"},`+
		`{"kty":"RSA","kid":"rsa","alg":"RS256","n":"%s","e":"%s"},`+
		`{"kty":"EC","kid":"ec","alg":"ES256","crv":"P-256","x":"%s","y":"%s"}]}`,
		jwtmint.KeyID, jwtmint.Secret, b64u(k.rsa.N.Bytes()), b64u(big.NewInt(int64(k.rsa.E)).Bytes()),
		b64u(k.ec.X.FillBytes(make([]byte, 32))), b64u(k.ec.Y.FillBytes(make([]byte, 32))))
}

// tokens mints n distinct tokens (each its own jti), valid for an hour.
func (k signingKeys) tokens(method jwt.SigningMethod, kid string, key any, n int) []string {
	exp := time.Now().Add(time.Hour).Unix()
	out := make([]string, max(n, 1))
	for i := range out {
		out[i], _ = jwtmint.Sign(method, key, kid, jwt.MapClaims{"sub": "bench", "exp": exp, "jti": fmt.Sprintf("bench-%d", i)})
	}
	return out
}

// policyJSON is the directpipe filter's configuration (one policy that
// guards every route) with the keys of jwksJSON: what the native filter
// beside jwt_authn in the static Envoy checks the same tokens with.
func (k signingKeys) policyJSON() string {
	return `{"name":"bench","realm":"directpipe","sources":[{"bearer":true}],"jwks":` + k.jwksJSON() + `}`
}
