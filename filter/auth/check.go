package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Reason codes are stable: clients and dashboards match on them.
const (
	ReasonMissingToken    = "missing_token"
	ReasonTokenTooLarge   = "token_too_large"
	ReasonMalformedToken  = "malformed_token"
	ReasonBadSignature    = "bad_signature"
	ReasonExpiredToken    = "expired_token"
	ReasonNotYetValid     = "token_not_yet_valid"
	ReasonInvalidToken    = "invalid_token"
	ReasonUnknownAPIKey   = "unknown_api_key"
	ReasonRouteNotAllowed = "route_not_configured"
)

// Request is what the check reads of the handshake. Header returns the
// value of a lower-case header name and whether it is present.
type Request struct {
	Path   string
	Header func(name string) (string, bool)
}

// Decision is the outcome of a check and what to do to the request.
type Decision struct {
	Allow    bool
	Status   int
	Reason   string
	Identity string
	// Remove lists headers to delete before forwarding: every token source
	// and every identity header a client might try to spoof.
	Remove []string
	// Set lists verified identity headers to add after Remove.
	Set [][2]string
	// Path, when not empty, replaces :path (the token query parameter
	// removed).
	Path string
}

// WWWAuthenticate is the challenge for a 401 (RFC 6750 §3).
func (d Decision) WWWAuthenticate(realm string) string {
	if d.Reason == ReasonMissingToken {
		return fmt.Sprintf("Bearer realm=%q", realm)
	}
	return fmt.Sprintf("Bearer realm=%q, error=\"invalid_token\"", realm)
}

// Check decides a handshake on a route at time now. An empty route means
// no route matched: the router answers 404 itself, and there is nothing to
// protect. Every route the control plane makes has a name.
func (c *Config) Check(route string, req Request, now time.Time) (Decision, *Policy) {
	if route == "" {
		return Decision{Allow: true}, nil
	}
	name, known := c.Routes[route]
	if !known {
		return Decision{Status: 403, Reason: ReasonRouteNotAllowed}, nil
	}
	if name == "" {
		return Decision{Allow: true}, nil
	}
	p := c.Policies[name]
	return p.Check(req, now), p
}

// Check verifies the request's token against the policy.
func (p *Policy) Check(req Request, now time.Time) Decision {
	token, strip := p.find(req)
	if token == "" {
		return deny(ReasonMissingToken)
	}
	if len(token) > p.MaxTokenBytes {
		return deny(ReasonTokenTooLarge)
	}
	var d Decision
	if strings.Count(token, ".") == 2 && len(p.keys) > 0 {
		d = p.verifyJWT(token, now)
	} else {
		d = p.verifyAPIKey(token)
	}
	if !d.Allow {
		return d
	}
	d.Remove = append(d.Remove, strip.headers...)
	d.Path = strip.path
	return d
}

func deny(reason string) Decision { return Decision{Status: 401, Reason: reason} }

type stripping struct {
	headers []string
	path    string
}

// find returns the first token in source order, and what to strip so that
// no token from any configured source is forwarded upstream.
func (p *Policy) find(req Request) (string, stripping) {
	var token string
	var s stripping
	for _, src := range p.Sources {
		var v string
		switch {
		case src.Bearer:
			h, ok := req.Header("authorization")
			if !ok {
				continue
			}
			s.headers = append(s.headers, "authorization")
			scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
			if strings.EqualFold(scheme, "bearer") {
				v = strings.TrimSpace(rest)
			}
		case src.Header != "":
			h, ok := req.Header(src.Header)
			if !ok {
				continue
			}
			s.headers = append(s.headers, src.Header)
			v = strings.TrimSpace(h)
		case src.Query != "":
			path := req.Path
			if s.path != "" {
				path = s.path
			}
			val, rest, found := cutQueryParam(path, src.Query)
			if !found {
				continue
			}
			s.path = rest
			v = val
		}
		if token == "" {
			token = v
		}
	}
	for _, h := range p.identityHeaders() {
		s.headers = append(s.headers, h)
	}
	return token, s
}

func (p *Policy) identityHeaders() []string {
	var out []string
	if p.IdentityHeader != "" {
		out = append(out, p.IdentityHeader)
	}
	for _, h := range p.ClaimHeaders {
		out = append(out, h)
	}
	return out
}

// cutQueryParam removes every occurrence of a query parameter from a path,
// keeping the others in order, and returns the first value.
func cutQueryParam(path, name string) (value, rest string, found bool) {
	base, query, ok := strings.Cut(path, "?")
	if !ok {
		return "", path, false
	}
	var kept []string
	for _, part := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(part, "=")
		if uk, err := url.QueryUnescape(k); err == nil && uk == name {
			if !found {
				value, _ = url.QueryUnescape(v)
				found = true
			}
			continue
		}
		kept = append(kept, part)
	}
	if !found {
		return "", path, false
	}
	if len(kept) == 0 {
		return value, base, true
	}
	return value, base + "?" + strings.Join(kept, "&"), true
}

func (p *Policy) verifyJWT(token string, now time.Time) Decision {
	var algs []string
	for _, k := range p.keys {
		algs = append(algs, k.alg)
	}
	parser := jwt.NewParser(
		// Only the algorithms of configured keys: "none" and algorithm
		// confusion never get to signature checking.
		jwt.WithValidMethods(algs),
		jwt.WithLeeway(p.leeway()),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		k, err := p.keyFor(t)
		if err != nil {
			return nil, err
		}
		if t.Method.Alg() != k.alg {
			return nil, errors.New("algorithm does not match the key")
		}
		return k.secret, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return deny(ReasonMalformedToken)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return deny(ReasonBadSignature)
	case errors.Is(err, jwt.ErrTokenExpired):
		return deny(ReasonExpiredToken)
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return deny(ReasonNotYetValid)
	default:
		return deny(ReasonInvalidToken)
	}
	d := Decision{Allow: true}
	if sub, ok := claims["sub"].(string); ok {
		d.Identity = sub
	}
	for claim, header := range p.ClaimHeaders {
		if v, ok := claimString(claims[claim]); ok {
			d.Set = append(d.Set, [2]string{header, v})
		}
	}
	if p.IdentityHeader != "" && d.Identity != "" {
		d.Set = append(d.Set, [2]string{p.IdentityHeader, sanitize(d.Identity)})
	}
	return d
}

func (p *Policy) keyFor(t *jwt.Token) (*key, error) {
	kid, _ := t.Header["kid"].(string)
	if k, ok := p.keys[kid]; ok {
		return k, nil
	}
	if _, has := t.Header["kid"]; !has && len(p.keys) == 1 {
		for _, k := range p.keys {
			return k, nil
		}
	}
	return nil, errors.New("no key for this kid")
}

func claimString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return sanitize(v), true
	case float64, bool:
		return fmt.Sprint(v), true
	}
	return "", false
}

// sanitize keeps a claim from smuggling a header line break upstream.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// verifyAPIKey compares the key's hash with every configured hash in
// constant time, without stopping at a match, so timing says nothing about
// which key, or whether any, matched.
func (p *Policy) verifyAPIKey(token string) Decision {
	if len(p.apiKeys) == 0 {
		return deny(ReasonMalformedToken)
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i, k := range p.apiKeys {
		if subtle.ConstantTimeCompare(sum[:], k.sum[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return deny(ReasonUnknownAPIKey)
	}
	d := Decision{Allow: true, Identity: p.apiKeys[match].identity}
	if p.IdentityHeader != "" && d.Identity != "" {
		d.Set = append(d.Set, [2]string{p.IdentityHeader, sanitize(d.Identity)})
	}
	return d
}
