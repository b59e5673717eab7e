// Package auth is the handshake filter's core: it parses the configuration
// the control plane sends by ECDS, finds the caller's token and verifies it.
// It has no Proxy-Wasm import, so it is tested and fuzzed natively.
package auth

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Limits a configuration cannot exceed; they also bound the fuzzer.
const (
	DefaultMaxTokenBytes = 8192
	maxConfigBytes       = 4 << 20
)

// Config is the whole filter configuration: which auth policy each route
// uses and the policies themselves.
type Config struct {
	// Routes maps every route name to its policy name, "" for a public
	// route. A route that is missing is denied: it reached Envoy before its
	// auth setting did, and failing closed is the safe side.
	Routes   map[string]string  `json:"routes"`
	Policies map[string]*Policy `json:"policies"`
}

// Policy says where a token is found and how it is verified.
type Policy struct {
	Name           string            `json:"name"`
	Realm          string            `json:"realm"`
	Sources        []Source          `json:"sources"`
	JWKS           *JWKS             `json:"jwks,omitempty"`
	LeewaySeconds  int64             `json:"leeway_seconds"`
	MaxTokenBytes  int               `json:"max_token_bytes"`
	APIKeys        []APIKey          `json:"api_keys,omitempty"`
	IdentityHeader string            `json:"identity_header,omitempty"`
	ClaimHeaders   map[string]string `json:"claim_headers,omitempty"`

	keys    map[string]*key // by kid
	apiKeys []apiKey
}

// Source is one place a token may be; exactly one field is set.
type Source struct {
	Bearer bool   `json:"bearer,omitempty"`
	Query  string `json:"query,omitempty"`
	Header string `json:"header,omitempty"`
}

// JWKS is a JSON Web Key Set (RFC 7517).
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one key. Only symmetric HMAC keys for now.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	K   string `json:"k,omitempty"`
}

// APIKey is the SHA-256 of a key and the identity it stands for.
type APIKey struct {
	SHA256   string `json:"sha256"`
	Identity string `json:"identity"`
}

type key struct {
	alg    string
	secret []byte
}

type apiKey struct {
	sum      [sha256.Size]byte
	identity string
}

// ParseConfig decodes and checks a configuration strictly: an unknown field,
// a bad key or an empty source is an error, so Envoy refuses the config and
// keeps the last good one.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("auth config: %d bytes is too large", len(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("auth config: %w", err)
	}
	if dec.More() {
		return nil, errors.New("auth config: trailing data")
	}
	for name, p := range c.Policies {
		if p == nil {
			return nil, fmt.Errorf("auth config: policy %q is null", name)
		}
		if err := p.prepare(); err != nil {
			return nil, fmt.Errorf("auth config: policy %q: %w", name, err)
		}
	}
	for route, pol := range c.Routes {
		if _, ok := c.Policies[pol]; pol != "" && !ok {
			return nil, fmt.Errorf("auth config: route %q uses unknown policy %q", route, pol)
		}
	}
	return &c, nil
}

func (p *Policy) prepare() error {
	if len(p.Sources) == 0 {
		return errors.New("no token sources")
	}
	for i, s := range p.Sources {
		n := 0
		if s.Bearer {
			n++
		}
		if s.Query != "" {
			n++
		}
		if s.Header != "" {
			n++
			p.Sources[i].Header = strings.ToLower(s.Header)
		}
		if n != 1 {
			return fmt.Errorf("sources[%d]: exactly one of bearer, query and header", i)
		}
	}
	if p.MaxTokenBytes <= 0 {
		p.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if p.LeewaySeconds < 0 {
		return errors.New("negative leeway")
	}
	if p.Realm == "" {
		p.Realm = "directpipe"
	}
	p.keys = map[string]*key{}
	if p.JWKS != nil {
		for i, k := range p.JWKS.Keys {
			if k.Kty != "oct" || !hmacAlgs[k.Alg] {
				return fmt.Errorf("jwks.keys[%d]: unsupported key type %q / alg %q", i, k.Kty, k.Alg)
			}
			secret, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.K, "="))
			if err != nil || len(secret) == 0 {
				return fmt.Errorf("jwks.keys[%d]: k is not base64url", i)
			}
			if _, dup := p.keys[k.Kid]; dup {
				return fmt.Errorf("jwks.keys[%d]: kid %q twice", i, k.Kid)
			}
			p.keys[k.Kid] = &key{alg: k.Alg, secret: secret}
		}
	}
	for i, k := range p.APIKeys {
		raw, err := hex.DecodeString(k.SHA256)
		if err != nil || len(raw) != sha256.Size {
			return fmt.Errorf("api_keys[%d]: sha256 must be 64 hex digits", i)
		}
		var ak apiKey
		copy(ak.sum[:], raw)
		ak.identity = k.Identity
		p.apiKeys = append(p.apiKeys, ak)
	}
	if len(p.keys) == 0 && len(p.apiKeys) == 0 {
		return errors.New("neither JWT keys nor API keys")
	}
	return nil
}

var hmacAlgs = map[string]bool{"HS256": true, "HS384": true, "HS512": true}

func (p *Policy) leeway() time.Duration { return time.Duration(p.LeewaySeconds) * time.Second }
