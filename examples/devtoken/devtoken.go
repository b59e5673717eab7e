// Package devtoken mints HS256 tokens signed with the example policy's
// development secret, for `make token`, the examples and the tests.
package devtoken

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

// Mint signs claims with a base64url secret.
func Mint(secretB64 string, c Claims) (string, error) {
	secret, err := base64.RawURLEncoding.DecodeString(secretB64)
	if err != nil {
		return "", fmt.Errorf("devtoken: secret is not base64url: %w", err)
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
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, mc)
	if c.KeyID != "" {
		tok.Header["kid"] = c.KeyID
	}
	s, err := tok.SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("devtoken: sign: %w", err)
	}
	return s, nil
}

// Demo mints a token with the development secret, valid for ttl from now.
func Demo(subject string, ttl time.Duration) (string, error) {
	now := time.Now()
	return Mint(Secret, Claims{Subject: subject, KeyID: KeyID, IssuedAt: now, NotBefore: now, Expires: now.Add(ttl)})
}
