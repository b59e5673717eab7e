// Package auth is the handshake filter's core: it parses the configuration
// the control plane sends by ECDS, finds the caller's token and verifies it.
// It has no Proxy-Wasm import, so it is tested and fuzzed natively.
package auth

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Limits a configuration cannot exceed; they also bound the fuzzer.
const (
	DefaultMaxTokenBytes = 8192
	DefaultRealm         = "directpipe"
	maxConfigBytes       = 4 << 20
)

// Config is the whole filter configuration. It comes in one of two forms:
//
//   - a route map, {"routes": {...}, "policies": {...}}, which the control
//     plane sends so that one ECDS resource covers every route;
//   - one bare Policy document, which then guards every route (a static
//     bootstrap, a single-tenant gateway).
type Config struct {
	// Routes maps every route name to its policy name, "" for a public
	// route. A route that is missing is denied: it reached Envoy before its
	// auth setting did, and failing closed is the safe side.
	Routes   map[string]string  `json:"routes"`
	Policies map[string]*Policy `json:"policies"`

	// single is set when the document was one bare policy.
	single *Policy
}

// Policy says where a token is found and how it is verified. Its JSON field
// names are the contract with the control plane.
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
	Issuer         string            `json:"issuer,omitempty"`
	Audiences      []string          `json:"audiences,omitempty"`
	RequiredScopes []string          `json:"required_scopes,omitempty"`
	Origins        *Origins          `json:"origins,omitempty"`

	keys    map[string]*key // by kid
	algs    []string        // the algorithms of keys, the only ones accepted
	apiKeys []apiKey
	claims  []string // ClaimHeaders' keys, sorted, so headers are set in a stable order
	origins []originMatcher
}

// Source is one place a token may be; exactly one field is set.
type Source struct {
	Bearer bool   `json:"bearer,omitempty"`
	Query  string `json:"query,omitempty"`
	Header string `json:"header,omitempty"`
	// SubprotocolPrefix names a Sec-WebSocket-Protocol entry carrying the
	// token, as browsers must send it.
	SubprotocolPrefix string `json:"subprotocol_prefix,omitempty"`
}

// Origins is the allowlist of pages that may open streams: the defence
// against cross-site WebSocket hijacking.
type Origins struct {
	// Allow holds "https://app.example.com" or "https://*.example.com".
	Allow []string `json:"allow"`
	// AllowMissing lets requests without Origin through (non-browser
	// clients never send one).
	AllowMissing bool `json:"allow_missing"`
}

// JWKS is a JSON Web Key Set (RFC 7517).
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// JWK is one key. Only symmetric keys (kty "oct", HMAC algorithms) are
// supported so far; kty selects how the key is read, so RSA and EC keys
// can be added beside them.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	K   string `json:"k,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// APIKey is the SHA-256 of a key and the identity it stands for.
type APIKey struct {
	SHA256   string `json:"sha256"`
	Identity string `json:"identity"`
}

// key is a verification key in the form the JWT library takes it: []byte
// for HMAC, later *rsa.PublicKey or *ecdsa.PublicKey.
type key struct {
	alg      string
	material any
}

type apiKey struct {
	sum      [sha256.Size]byte
	identity string
}

// ParseConfig decodes and checks a configuration strictly: an unknown field,
// a bad key or an empty source is an error, so Envoy refuses the config and
// keeps the last good one. Errors never quote key material.
func ParseConfig(data []byte) (*Config, error) {
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("auth config: %d bytes is too large", len(data))
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		return nil, errors.New("auth config: not a JSON object")
	}
	_, hasRoutes := top["routes"]
	_, hasPolicies := top["policies"]
	if !hasRoutes && !hasPolicies {
		var p Policy
		if err := decodeStrict(data, &p); err != nil {
			return nil, err
		}
		if err := p.prepare(); err != nil {
			return nil, fmt.Errorf("auth config: %w", err)
		}
		return &Config{single: &p}, nil
	}
	var c Config
	if err := decodeStrict(data, &c); err != nil {
		return nil, err
	}
	for _, name := range sortedKeys(c.Policies) {
		p := c.Policies[name]
		if p == nil {
			return nil, fmt.Errorf("auth config: policy %q is null", name)
		}
		if err := p.prepare(); err != nil {
			return nil, fmt.Errorf("auth config: policy %q: %w", name, err)
		}
	}
	for _, route := range sortedKeys(c.Routes) {
		if pol := c.Routes[route]; pol != "" && c.Policies[pol] == nil {
			return nil, fmt.Errorf("auth config: route %q uses unknown policy %q", route, pol)
		}
	}
	return &c, nil
}

// Single returns the policy of a one-policy document, and nil for a route
// map. A filter with no route to look up (the tcp module) needs the former.
func (c *Config) Single() *Policy { return c.single }

// Summary describes a configuration for the log, without key material.
func (c *Config) Summary() string {
	if c.single != nil {
		return fmt.Sprintf("policy %q guards every route", c.single.Name)
	}
	return fmt.Sprintf("%d routes, %d policies", len(c.Routes), len(c.Policies))
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		// The decoder's message names fields and types, never values.
		return fmt.Errorf("auth config: %w", err)
	}
	if dec.More() {
		return errors.New("auth config: trailing data")
	}
	return nil
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
			h := strings.ToLower(s.Header)
			if !validHeaderName(h) {
				return fmt.Errorf("sources[%d]: %q is not a header name", i, s.Header)
			}
			p.Sources[i].Header = h
		}
		if s.SubprotocolPrefix != "" {
			n++
			if !validHeaderName(strings.ToLower(s.SubprotocolPrefix)) {
				return fmt.Errorf("sources[%d]: %q is not a subprotocol prefix", i, s.SubprotocolPrefix)
			}
		}
		if n != 1 {
			return fmt.Errorf("sources[%d]: exactly one of bearer, query, header and subprotocol_prefix", i)
		}
	}
	switch {
	case p.MaxTokenBytes == 0:
		p.MaxTokenBytes = DefaultMaxTokenBytes
	case p.MaxTokenBytes < 0:
		return errors.New("negative max_token_bytes")
	}
	if p.LeewaySeconds < 0 {
		return errors.New("negative leeway_seconds")
	}
	if p.Realm == "" {
		p.Realm = DefaultRealm
	}
	if !validRealm(p.Realm) {
		return errors.New("realm must be printable ASCII without quotes or backslashes")
	}
	if err := p.prepareHeaders(); err != nil {
		return err
	}
	if o := p.Origins; o != nil {
		for i, a := range o.Allow {
			m, err := parseOrigin(a)
			if err != nil {
				return fmt.Errorf("origins.allow[%d]: %w", i, err)
			}
			p.origins = append(p.origins, m)
		}
	}
	p.keys = map[string]*key{}
	if p.JWKS != nil {
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

// prepareHeaders checks the headers the filter writes. A claim must not be
// able to set a pseudo-header or a header that changes how the request is
// framed or routed.
func (p *Policy) prepareHeaders() error {
	check := func(field, h string) error {
		if !validHeaderName(h) {
			return fmt.Errorf("%s: %q is not a lower-case header name", field, h)
		}
		if reservedHeaders[h] {
			return fmt.Errorf("%s: %q is reserved", field, h)
		}
		return nil
	}
	if p.IdentityHeader != "" {
		if err := check("identity_header", p.IdentityHeader); err != nil {
			return err
		}
	}
	seen := map[string]string{p.IdentityHeader: "identity_header"}
	p.claims = sortedKeys(p.ClaimHeaders)
	for _, claim := range p.claims {
		h := p.ClaimHeaders[claim]
		field := fmt.Sprintf("claim_headers[%q]", claim)
		if err := check(field, h); err != nil {
			return err
		}
		if other, dup := seen[h]; dup {
			return fmt.Errorf("%s: header %q is also written by %s", field, h, other)
		}
		seen[h] = field
	}
	return nil
}

// reservedHeaders holds what the control plane's validation reserves plus
// the remaining hop-by-hop headers.
var reservedHeaders = map[string]bool{
	"authorization": true, "host": true, "connection": true, "upgrade": true,
	"content-length": true, "transfer-encoding": true, "cookie": true,
	"sec-websocket-key": true, "sec-websocket-protocol": true, "sec-websocket-version": true,
	"keep-alive": true, "proxy-connection": true, "te": true,
}

// parseJWK turns a JWK into a verification key by its kty. Each key type
// accepts only its own algorithms, so a token cannot make an RSA public key
// serve as an HMAC secret.
func parseJWK(j JWK) (*key, error) {
	b64 := func(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")) }
	switch j.Kty {
	case "RSA":
		if !rsaAlgs[j.Alg] {
			return nil, fmt.Errorf("alg %q is not an RSA algorithm", j.Alg)
		}
		n, err1 := b64(j.N)
		e, err2 := b64(j.E)
		if err1 != nil || err2 != nil || len(n) == 0 || len(e) == 0 || len(e) > 4 {
			return nil, errors.New("n and e must be base64url")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 || pub.E < 3 {
			return nil, errors.New("RSA key too small")
		}
		return &key{alg: j.Alg, material: pub}, nil
	case "EC":
		curve, size := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384()}[j.Alg], map[string]int{"ES256": 32, "ES384": 48}[j.Alg]
		wantCrv := map[string]string{"ES256": "P-256", "ES384": "P-384"}[j.Alg]
		if curve == nil || j.Crv != wantCrv {
			return nil, fmt.Errorf("alg %q and crv %q do not make an EC key", j.Alg, j.Crv)
		}
		x, err1 := b64(j.X)
		y, err2 := b64(j.Y)
		if err1 != nil || err2 != nil || len(x) != size || len(y) != size {
			return nil, errors.New("x and y must be base64url of the curve's size")
		}
		// crypto/ecdh checks that the point is on the curve.
		point := append(append([]byte{4}, x...), y...)
		if _, err := map[string]ecdh.Curve{"ES256": ecdh.P256(), "ES384": ecdh.P384()}[j.Alg].NewPublicKey(point); err != nil {
			return nil, errors.New("the point is not on the curve")
		}
		return &key{alg: j.Alg, material: &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}}, nil
	case "OKP":
		if j.Alg != "EdDSA" || j.Crv != "Ed25519" {
			return nil, fmt.Errorf("alg %q and crv %q: only EdDSA with Ed25519", j.Alg, j.Crv)
		}
		x, err := b64(j.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, errors.New("x must be 32 bytes of base64url")
		}
		return &key{alg: j.Alg, material: ed25519.PublicKey(x)}, nil
	case "oct":
		if !hmacAlgs[j.Alg] {
			return nil, fmt.Errorf("alg %q is not an HMAC algorithm", j.Alg)
		}
		secret, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(j.K, "="))
		if err != nil || len(secret) == 0 {
			return nil, errors.New("k is not base64url")
		}
		return &key{alg: j.Alg, material: secret}, nil
	}
	return nil, fmt.Errorf("unsupported kty %q", j.Kty)
}

var (
	hmacAlgs = map[string]bool{"HS256": true, "HS384": true, "HS512": true}
	rsaAlgs  = map[string]bool{"RS256": true, "RS384": true, "RS512": true, "PS256": true}
)

// validHeaderName accepts a lower-case RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validRealm keeps the realm safe to quote in WWW-Authenticate as is.
func validRealm(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func (p *Policy) leeway() time.Duration { return time.Duration(p.LeewaySeconds) * time.Second }

// originMatcher is one allowed origin: a scheme and a host (with port), or
// a scheme and a domain whose subdomains, at any depth, are allowed.
type originMatcher struct {
	scheme   string
	host     string // lower case, with :port when one is given
	wildcard bool   // host is a domain: ".example.com"
}

func parseOrigin(s string) (originMatcher, error) {
	scheme, host, ok := strings.Cut(strings.ToLower(s), "://")
	if !ok || (scheme != "http" && scheme != "https") || host == "" || strings.ContainsAny(host, "/?#@ ") {
		return originMatcher{}, fmt.Errorf("%q is not scheme://host[:port]", s)
	}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		if rest == "" || strings.Contains(rest, "*") {
			return originMatcher{}, fmt.Errorf("%q: a wildcard needs a domain", s)
		}
		return originMatcher{scheme: scheme, host: "." + rest, wildcard: true}, nil
	}
	if strings.Contains(host, "*") {
		return originMatcher{}, fmt.Errorf("%q: only a leading *. is allowed", s)
	}
	return originMatcher{scheme: scheme, host: host}, nil
}

// matches compares an Origin header value (RFC 6454 serialisation).
func (m originMatcher) matches(origin string) bool {
	u, err := url.Parse(strings.ToLower(origin))
	if err != nil || u.Scheme != m.scheme || u.Host == "" || u.Path != "" || u.User != nil {
		return false
	}
	if m.wildcard {
		return strings.HasSuffix(u.Host, m.host) && len(u.Host) > len(m.host)
	}
	return u.Host == m.host
}
