// Package jwtmint signs JWTs for `make token`, the examples, the end-to-end
// tests and the latency lab: one signer instead of a copy in each. The
// filter's own unit tests keep a local helper, because filter code never
// imports the test kit.
package jwtmint

import (
	"encoding/base64"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Secret is the example policy's development key, base64url: the bytes of
// "directpipe-development-secret-32b". It exists so that a laptop demo works;
// it must never guard anything real.
const Secret = "ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi"

// KeyID is the example key's kid.
const KeyID = "dev"

// Claims are what a minted token says.
type Claims struct {
	Subject   string
	KeyID     string
	IssuedAt  time.Time
	NotBefore time.Time
	Expires   time.Time
	Extra     map[string]any
}

// Sign signs claims with method and key (a []byte for HMAC, a private key
// otherwise); kid goes into the header when it is not empty.
func Sign(method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) (string, error) {
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		return "", fmt.Errorf("jwtmint: sign %s: %w", method.Alg(), err)
	}
	return s, nil
}

// DevSecret is Secret decoded.
func DevSecret() []byte {
	b, err := base64.RawURLEncoding.DecodeString(Secret)
	if err != nil {
		panic("jwtmint: Secret is not base64url") // a constant: cannot happen
	}
	return b
}

// Mint signs c with HS256 and a base64url secret.
func Mint(secretB64 string, c Claims) (string, error) {
	secret, err := base64.RawURLEncoding.DecodeString(secretB64)
	if err != nil {
		return "", fmt.Errorf("jwtmint: secret is not base64url: %w", err)
	}
	mc := jwt.MapClaims{}
	for k, v := range c.Extra {
		mc[k] = v
	}
	if c.Subject != "" {
		mc["sub"] = c.Subject
	}
	for name, t := range map[string]time.Time{"iat": c.IssuedAt, "nbf": c.NotBefore, "exp": c.Expires} {
		if !t.IsZero() {
			mc[name] = t.Unix()
		}
	}
	return Sign(jwt.SigningMethodHS256, secret, c.KeyID, mc)
}

// Demo mints a token with the development secret, valid for ttl from now.
func Demo(subject string, ttl time.Duration) (string, error) {
	now := time.Now()
	return Mint(Secret, Claims{Subject: subject, KeyID: KeyID, IssuedAt: now, NotBefore: now, Expires: now.Add(ttl)})
}
