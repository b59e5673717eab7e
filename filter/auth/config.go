// Package auth is the handshake filter's core: it parses the configuration
// the control plane sends by ECDS, finds the caller's token and verifies it.
// It has no Proxy-Wasm import, so it is tested and fuzzed natively.
package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// maxConfigBytes bounds a configuration document; it also bounds the fuzzer.
const maxConfigBytes = 4 << 20

// Config is the whole filter configuration, parsed and checked. It comes in
// one of two forms:
//
//   - a route map (contract.Config), which the control plane sends so that
//     one ECDS resource covers every route;
//   - one bare contract.Policy document, which then guards every route (a
//     static bootstrap, a single-tenant gateway, the tcp module).
type Config struct {
	// routes maps every route name to its policy name, "" for a public
	// route. A route that is missing is denied: it reached Envoy before its
	// auth setting did, and failing closed is the safe side.
	routes   map[string]string
	policies map[string]*Policy

	// single is set when the document was one bare policy.
	single *Policy

	// protected lists every identity and claim header any policy sets,
	// sorted: no request, whatever its route, goes on with a client's copy.
	protected []string

	// clients holds the client address lists by route name.
	clients map[string]*ClientList
}

// Policy is one policy of the configuration, with its keys and matchers
// ready for checking requests.
type Policy struct {
	contract.Policy

	keys    map[string]*key // by kid
	algs    []string        // the algorithms of keys, the only ones accepted
	apiKeys []apiKey
	claims  []string // ClaimHeaders' keys, sorted, so headers are set in a stable order
	protect []string // what protected() returns, computed once
	origins []originMatcher
	cache   *tokenCache   // nil when off
	reuse   time.Duration // how long an API key's allow may be reused; 0: not at all
	host    HostVerifier  // nil: every signature is checked here
	clients *ClientList   // nil: any client address
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
		if err := decodeStrict(data, &p.Policy); err != nil {
			return nil, err
		}
		if err := p.prepare(); err != nil {
			return nil, fmt.Errorf("auth config: %w", err)
		}
		return &Config{single: &p, protected: p.protected()}, nil
	}
	var doc contract.Config
	if err := decodeStrict(data, &doc); err != nil {
		return nil, err
	}
	c := Config{routes: doc.Routes, policies: make(map[string]*Policy, len(doc.Policies))}
	for _, name := range sortedKeys(doc.Policies) {
		spec := doc.Policies[name]
		if spec == nil {
			return nil, fmt.Errorf("auth config: policy %q is null", name)
		}
		p := &Policy{Policy: *spec}
		if err := p.prepare(); err != nil {
			return nil, fmt.Errorf("auth config: policy %q: %w", name, err)
		}
		c.policies[name] = p
	}
	for _, route := range sortedKeys(doc.Clients) {
		l, err := ParseClients(doc.Clients[route])
		if err != nil {
			return nil, fmt.Errorf("auth config: route %q: %w", route, err)
		}
		if l == nil {
			return nil, fmt.Errorf("auth config: route %q: clients is null", route)
		}
		if c.clients == nil {
			c.clients = map[string]*ClientList{}
		}
		c.clients[route] = l
	}
	for _, route := range sortedKeys(c.routes) {
		if pol := c.routes[route]; pol != "" && c.policies[pol] == nil {
			return nil, fmt.Errorf("auth config: route %q uses unknown policy %q", route, pol)
		}
	}
	seen := map[string]bool{}
	for _, name := range sortedKeys(c.policies) {
		for _, h := range c.policies[name].protected() {
			if !seen[h] {
				seen[h] = true
				c.protected = append(c.protected, h)
			}
		}
	}
	slices.Sort(c.protected)
	return &c, nil
}

// Single returns the policy of a one-policy document, and nil for a route
// map. A filter with no route to look up (the tcp module) needs the former.
func (c *Config) Single() *Policy { return c.single }

// Clients returns the client address lists of a route, nil when any
// client may open streams on it. A one-policy document's lists guard every
// route.
func (c *Config) Clients(route string) *ClientList {
	if c.single != nil {
		return c.single.clients
	}
	return c.clients[route]
}

// Summary describes a configuration for the log, without key material.
func (c *Config) Summary() string {
	if c.single != nil {
		return fmt.Sprintf("policy %q guards every route", c.single.Name)
	}
	return fmt.Sprintf("%d routes, %d policies, %d client lists", len(c.routes), len(c.policies), len(c.clients))
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
	var err error
	if p.clients, err = ParseClients(p.Policy.Clients); err != nil {
		return err
	}
	if err := checkQuotas(p.Quotas); err != nil {
		return err
	}
	if p.Public {
		return p.preparePublic()
	}
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
		p.MaxTokenBytes = contract.DefaultMaxTokenBytes
	case p.MaxTokenBytes < 0:
		return errors.New("negative max_token_bytes")
	}
	if p.LeewaySeconds < 0 {
		return errors.New("negative leeway_seconds")
	}
	if p.MaxTokenLifetimeSeconds < 0 || p.MaxTokenLifetimeSeconds > contract.MaxTokenLifetimeSeconds {
		return fmt.Errorf("max_token_lifetime_seconds: between 1 and %d", contract.MaxTokenLifetimeSeconds)
	}
	if p.Realm == "" {
		p.Realm = contract.DefaultRealm
	}
	if !validRealm(p.Realm) {
		return errors.New("realm must be printable ASCII without quotes or backslashes")
	}
	if err := p.prepareHeaders(); err != nil {
		return err
	}
	if err := p.prepareOrigins(); err != nil {
		return err
	}
	if err := p.prepareKeys(); err != nil {
		return err
	}
	if err := p.prepareAPIKeys(); err != nil {
		return err
	}
	if len(p.keys) == 0 && len(p.apiKeys) == 0 {
		return errors.New("neither JWT keys nor API keys")
	}
	return p.prepareCache()
}

// prepareCache sizes the token cache: 0 takes the defaults, a negative
// value turns the cache off. The cache's maximum age is also how long an
// API key's allow may be reused (Decision.Until), with or without JWT
// keys.
func (p *Policy) prepareCache() error {
	entries, maxAge := DefaultTokenCacheEntries, DefaultTokenCacheMaxAge
	if tc := p.TokenCache; tc != nil {
		if tc.MaxEntries > contract.MaxTokenCacheEntries || tc.MaxAgeSeconds > contract.MaxTokenCacheSeconds {
			if len(p.keys) == 0 {
				// Never refused without JWT keys; nothing is reused.
				return nil
			}
			return fmt.Errorf("token_cache: at most %d entries and %d seconds", contract.MaxTokenCacheEntries, contract.MaxTokenCacheSeconds)
		}
		if tc.MaxEntries != 0 {
			entries = tc.MaxEntries
		}
		if tc.MaxAgeSeconds != 0 {
			maxAge = time.Duration(tc.MaxAgeSeconds) * time.Second
		}
	}
	if entries > 0 && maxAge > 0 {
		p.reuse = maxAge
	}
	if len(p.keys) == 0 {
		return nil
	}
	p.cache = newTokenCache(entries, maxAge)
	return nil
}

// preparePublic checks a policy that verifies nothing: any way to accept
// a token in it would be a mistake.
func (p *Policy) preparePublic() error {
	switch {
	case len(p.Sources) > 0 || p.JWKS != nil || len(p.APIKeys) > 0:
		return errors.New("a public policy has no sources and no keys")
	case p.IdentityHeader != "" || len(p.ClaimHeaders) > 0 || p.Origins != nil:
		return errors.New("a public policy sets no identity and checks no origin")
	}
	if p.Realm == "" {
		p.Realm = contract.DefaultRealm
	}
	if !validRealm(p.Realm) {
		return errors.New("realm must be printable ASCII without quotes or backslashes")
	}
	return p.prepareHeaders()
}

// prepareHeaders checks the headers the filter writes. A claim must not be
// able to set a pseudo-header or a header that changes how the request is
// framed or routed.
func (p *Policy) prepareHeaders() error {
	check := func(field, h string) error {
		if !validHeaderName(h) {
			return fmt.Errorf("%s: %q is not a lower-case header name", field, h)
		}
		if contract.IsReservedHeader(h) {
			return fmt.Errorf("%s: %q is reserved", field, h)
		}
		return nil
	}
	if p.IdentityHeader != "" {
		if err := check("identity_header", p.IdentityHeader); err != nil {
			return err
		}
	}
	for i, h := range p.ProtectedHeaders {
		h = strings.ToLower(h)
		if err := check(fmt.Sprintf("protected_headers[%d]", i), h); err != nil {
			return err
		}
		p.ProtectedHeaders[i] = h
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
	p.protect = p.protectedHeaders()
	return nil
}

// protected lists the headers a request this policy lets through must
// not carry from the client: those it sets, and those other policies set.
func (p *Policy) protected() []string { return p.protect }

func (p *Policy) protectedHeaders() []string {
	var out []string
	if p.IdentityHeader != "" {
		out = append(out, p.IdentityHeader)
	}
	for _, claim := range p.claims {
		out = append(out, p.ClaimHeaders[claim])
	}
	out = append(out, p.ProtectedHeaders...)
	slices.Sort(out)
	return slices.Compact(out)
}

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

// maxLifetime is how far ahead a token's exp may be. The field keeps what
// the document said (0: the default), so the policy read back is the
// policy the control plane built.
func (p *Policy) maxLifetime() time.Duration {
	if p.MaxTokenLifetimeSeconds == 0 {
		return contract.DefaultMaxTokenLifetimeSeconds * time.Second
	}
	return time.Duration(p.MaxTokenLifetimeSeconds) * time.Second
}

// checkQuotas holds a policy's quotas to the bounds the control plane
// validates.
func checkQuotas(q *contract.Quotas) error {
	if q == nil {
		return nil
	}
	if q.MaxStreams > contract.MaxStreamsPerIdentity {
		return fmt.Errorf("quotas: max_streams %d is more than %d", q.MaxStreams, contract.MaxStreamsPerIdentity)
	}
	if len(q.Identities) > contract.MaxQuotaIdentities {
		return fmt.Errorf("quotas: %d identities is more than %d", len(q.Identities), contract.MaxQuotaIdentities)
	}
	for id, n := range q.Identities {
		if id == "" || len(id) > contract.MaxIdentityBytes || n > contract.MaxStreamsPerIdentity {
			return errors.New("quotas: an identity's entry is out of bounds")
		}
	}
	if len(q.Split) > contract.MaxSplitIdentities {
		return fmt.Errorf("quotas: %d split identities is more than %d", len(q.Split), contract.MaxSplitIdentities)
	}
	for id, s := range q.Split {
		if id == "" || len(id) > contract.MaxIdentityBytes || s == nil || s.Rest > contract.MaxStreamsPerIdentity || len(s.Nodes) > contract.MaxSplitNodes {
			return errors.New("quotas: a split identity's entry is out of bounds")
		}
		for node, n := range s.Nodes {
			if node == "" || n > contract.MaxStreamsPerIdentity {
				return errors.New("quotas: a split identity's node share is out of bounds")
			}
		}
	}
	if r := q.Handshakes; r != nil && (r.PerSecond < 1 || r.PerSecond > contract.MaxHandshakesPerSecond || r.Burst > contract.MaxHandshakesPerSecond) {
		return fmt.Errorf("quotas: handshakes must be 1 to %d a second, with a burst of at most as many", contract.MaxHandshakesPerSecond)
	}
	return nil
}
