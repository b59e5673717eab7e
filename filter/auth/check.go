package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Reason codes are stable: clients and dashboards match on them, and each
// names a metric, directpipe_handshake_denied_<reason>.
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
	ReasonInvalidIssuer   = "invalid_issuer"
	ReasonInvalidAudience = "invalid_audience"
	ReasonScope           = "insufficient_scope"
	ReasonOriginMissing   = "missing_origin"
	ReasonOriginDenied    = "origin_not_allowed"
	ReasonNotConfigured   = "filter_not_configured"
	ReasonInternal        = "internal_error"
	// ReasonBadHandshake is the tcp module's: the first bytes of the
	// connection are not a WebSocket upgrade request it can read.
	ReasonBadHandshake = "bad_handshake"
)

// denials gives each reason its status and the sentence of its body.
var denials = map[string]struct {
	status  int
	message string
}{
	ReasonMissingToken:    {401, "a token is required"},
	ReasonTokenTooLarge:   {401, "the token is too large"},
	ReasonMalformedToken:  {401, "the token is malformed"},
	ReasonBadSignature:    {401, "the token signature does not verify"},
	ReasonExpiredToken:    {401, "the token has expired"},
	ReasonNotYetValid:     {401, "the token is not valid yet"},
	ReasonInvalidToken:    {401, "the token is not valid"},
	ReasonUnknownAPIKey:   {401, "the API key is not known"},
	ReasonInvalidIssuer:   {401, "the token's issuer is not accepted"},
	ReasonInvalidAudience: {401, "the token is not meant for this service"},
	ReasonScope:           {403, "the token lacks a required scope"},
	ReasonRouteNotAllowed: {403, "the route has no auth setting yet"},
	ReasonOriginMissing:   {403, "the request has no Origin"},
	ReasonOriginDenied:    {403, "the page's origin may not open streams here"},
	ReasonBadHandshake:    {400, "the upgrade request could not be read"},
	ReasonInternal:        {500, "the handshake could not be checked"},
	ReasonNotConfigured:   {503, "the handshake filter has no configuration"},
}

// Reasons lists every reason code, sorted, so that a metric can exist for
// each before the first denial.
func Reasons() []string { return sortedKeys(denials) }

// Denial is the decision that refuses a handshake for reason, with the
// reason's status.
func Denial(reason string) Decision {
	return Decision{Status: denials[reason].status, Reason: reason}
}

// Request is what the check reads of the handshake. Header returns the
// value of a lower-case header name and whether it is present; it is a
// function so the filter asks the host only for the headers a policy names.
type Request struct {
	Path   string
	Header func(name string) (string, bool)
}

// Decision is the outcome of a check and what to do to the request.
type Decision struct {
	Allow    bool
	Status   int // 401 or 403; 500 or 503 when the filter cannot check
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

// Internal is the decision when the filter cannot carry out an allow (the
// host refused to strip the token): the request must not go on with it.
func Internal() Decision { return Denial(ReasonInternal) }

// NotConfigured is the decision for a stream whose plugin has no valid
// configuration: nothing can be verified, so nothing passes.
func NotConfigured() Decision { return Denial(ReasonNotConfigured) }

// Challenges reports whether the denial carries a WWW-Authenticate
// challenge: every 401, and the 403 for a missing scope (RFC 6750 §3.1).
func (d Decision) Challenges() bool {
	return !d.Allow && (d.Status == 401 || d.Reason == ReasonScope)
}

// WWWAuthenticate is the challenge for a 401 (RFC 6750 §3). The realm was
// checked by ParseConfig to need no escaping.
func (d Decision) WWWAuthenticate(realm string) string {
	if d.Reason == ReasonScope {
		return `Bearer realm="` + realm + `", error="insufficient_scope"`
	}
	if d.Reason == ReasonMissingToken {
		return `Bearer realm="` + realm + `"`
	}
	return `Bearer realm="` + realm + `", error="invalid_token"`
}

// Body is the JSON body of a denial: the reason and a sentence, never the
// token.
func (d Decision) Body() []byte {
	b, _ := json.Marshal(struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}{d.Reason, denials[d.Reason].message})
	return append(b, '\n')
}

// UnnamedRoute is the route argument of Check for a matched route that has
// no name. No route map can name it, so a routed configuration refuses it.
const UnnamedRoute = "\x00unnamed"

// Check decides a handshake on a route at time now. The policy is nil for a
// public or unknown route.
//
// A single-policy configuration guards every request whatever its route.
// With a route map, an empty route means no route matched: the router
// answers 404 itself, and there is nothing to protect. Every route the
// control plane makes has a name.
func (c *Config) Check(route string, req Request, now time.Time) (Decision, *Policy) {
	if c.single != nil {
		return c.single.Check(req, now), c.single
	}
	if route == "" {
		return Decision{Allow: true}, nil
	}
	name, known := c.Routes[route]
	if !known || route == UnnamedRoute {
		return Denial(ReasonRouteNotAllowed), nil
	}
	if name == "" {
		return Decision{Allow: true}, nil
	}
	p := c.Policies[name]
	return p.Check(req, now), p
}

// Check verifies the request's origin, then its token, against the policy.
// The origin comes first: a page on another site must not even learn
// whether a browser's ambient token would have worked.
func (p *Policy) Check(req Request, now time.Time) Decision {
	if d, ok := p.checkOrigin(req); !ok {
		return d
	}
	token, strip := p.find(req)
	if token == "" {
		return Denial(ReasonMissingToken)
	}
	if len(token) > p.MaxTokenBytes {
		return Denial(ReasonTokenTooLarge)
	}
	var d Decision
	// A JWS compact token always has dots; API keys are opaque strings
	// without them.
	if strings.Contains(token, ".") && len(p.keys) > 0 {
		d = p.verifyJWT(token, now)
	} else {
		d = p.verifyAPIKey(token)
	}
	if !d.Allow {
		return d
	}
	d.Remove = append(d.Remove, strip.headers...)
	d.Set = append(d.Set, strip.set...)
	d.Path = strip.path
	return d
}

func (p *Policy) checkOrigin(req Request) (Decision, bool) {
	if p.Origins == nil {
		return Decision{}, true
	}
	origin, ok := req.Header("origin")
	if !ok || origin == "" {
		if p.Origins.AllowMissing {
			return Decision{}, true
		}
		return Denial(ReasonOriginMissing), false
	}
	for _, m := range p.origins {
		if m.matches(origin) {
			return Decision{}, true
		}
	}
	return Denial(ReasonOriginDenied), false
}

type stripping struct {
	headers []string
	set     [][2]string // headers rewritten without the token
	path    string
}

// cutSubprotocol removes the first Sec-WebSocket-Protocol entry with the
// prefix, keeping the others in order, and returns the token it carried.
func cutSubprotocol(header, prefix string) (token, rest string, found bool) {
	var kept []string
	for entry := range strings.SplitSeq(header, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		if t, ok := strings.CutPrefix(entry, prefix); ok && !found {
			token, found = t, true
			continue
		}
		kept = append(kept, entry)
	}
	return token, strings.Join(kept, ", "), found
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
		case src.SubprotocolPrefix != "":
			h, ok := req.Header("sec-websocket-protocol")
			if !ok {
				continue
			}
			val, rest, found := cutSubprotocol(h, src.SubprotocolPrefix)
			if !found {
				continue
			}
			if rest == "" {
				s.headers = append(s.headers, "sec-websocket-protocol")
			} else {
				s.set = append(s.set, [2]string{"sec-websocket-protocol", rest})
			}
			v = val
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
	if p.IdentityHeader != "" {
		s.headers = append(s.headers, p.IdentityHeader)
	}
	for _, claim := range p.claims {
		s.headers = append(s.headers, p.ClaimHeaders[claim])
	}
	return token, s
}

// cutQueryParam removes every occurrence of a query parameter from a path,
// keeping the others byte for byte and in order, and returns the first
// value.
func cutQueryParam(path, name string) (value, rest string, found bool) {
	base, query, ok := strings.Cut(path, "?")
	if !ok {
		return "", path, false
	}
	var kept []string
	for part := range strings.SplitSeq(query, "&") {
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
	if !wellFormed(token) {
		return Denial(ReasonMalformedToken)
	}
	parser := jwt.NewParser(
		// Only the algorithms of configured keys: "none" and algorithm
		// confusion are refused before any key is looked up.
		jwt.WithValidMethods(p.algs),
		jwt.WithLeeway(p.leeway()),
		jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
	)
	claims := jwt.MapClaims{}
	_, err := parser.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		k, err := p.keyFor(t)
		if err != nil {
			return nil, err
		}
		// Each key verifies only its own algorithm, whatever else the
		// policy's other keys allow.
		if t.Method.Alg() != k.alg {
			return nil, errAlgMismatch
		}
		return k.material, nil
	})
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrTokenMalformed):
		return Denial(ReasonMalformedToken)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, errAlgMismatch):
		return Denial(ReasonBadSignature)
	case errors.Is(err, jwt.ErrTokenExpired):
		return Denial(ReasonExpiredToken)
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return Denial(ReasonNotYetValid)
	default:
		return Denial(ReasonInvalidToken)
	}
	if p.Issuer != "" {
		if iss, _ := claims["iss"].(string); iss != p.Issuer {
			return Denial(ReasonInvalidIssuer)
		}
	}
	if len(p.Audiences) > 0 {
		aud, _ := claims.GetAudience()
		if !slices.ContainsFunc(p.Audiences, func(a string) bool { return slices.Contains(aud, a) }) {
			return Denial(ReasonInvalidAudience)
		}
	}
	if missing := missingScopes(claims, p.RequiredScopes); missing {
		return Denial(ReasonScope)
	}
	d := Decision{Allow: true}
	if sub, ok := claims["sub"].(string); ok {
		d.Identity = sanitize(sub)
	}
	for _, claim := range p.claims {
		if v, ok := claimString(claims[claim]); ok && v != "" {
			d.Set = append(d.Set, [2]string{p.ClaimHeaders[claim], v})
		}
	}
	if p.IdentityHeader != "" && d.Identity != "" {
		d.Set = append(d.Set, [2]string{p.IdentityHeader, d.Identity})
	}
	return d
}

// missingScopes reports whether a required scope is absent from the
// space-separated "scope" claim (RFC 8693) and the "scp" array.
// wellFormed applies the JWS rules the JWT library leaves out: exactly
// three parts, header and claims objects that name no member twice (RFC
// 7515 §4, RFC 7519 §4: one reader must not see a different claim than
// another), and no "crit" header, since no extension is understood here
// (RFC 7515 §4.1.11). Anything else malformed, the library reports.
func wellFormed(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	for i, part := range parts[:2] {
		raw, err := base64.RawURLEncoding.DecodeString(part)
		if err != nil {
			return true // the library's error is as precise
		}
		names, ok := memberNames(raw)
		if !ok {
			return false
		}
		if i == 0 && slices.Contains(names, "crit") {
			return false
		}
	}
	return true
}

// memberNames lists the top-level member names of a JSON object, and
// whether the object names each only once.
func memberNames(raw []byte) ([]string, bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, true // not an object: the library refuses it
	}
	var names []string
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return names, true
		}
		name, _ := t.(string)
		if slices.Contains(names, name) {
			return names, false
		}
		names = append(names, name)
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return names, true
		}
	}
	return names, true
}

func missingScopes(claims jwt.MapClaims, required []string) bool {
	have := map[string]bool{}
	if s, ok := claims["scope"].(string); ok {
		for _, sc := range strings.Fields(s) {
			have[sc] = true
		}
	}
	if list, ok := claims["scp"].([]any); ok {
		for _, sc := range list {
			if str, ok := sc.(string); ok {
				have[str] = true
			}
		}
	}
	for _, r := range required {
		if !have[r] {
			return true
		}
	}
	return false
}

var (
	errAlgMismatch = errors.New("algorithm does not match the key")
	errNoKey       = errors.New("no key for this kid")
)

// keyFor picks the key by kid; a token without kid may use the only key.
func (p *Policy) keyFor(t *jwt.Token) (*key, error) {
	kid, hasKid := t.Header["kid"]
	if !hasKid {
		if len(p.keys) == 1 {
			for _, k := range p.keys {
				return k, nil
			}
		}
		return nil, errNoKey
	}
	s, ok := kid.(string)
	if !ok {
		return nil, errNoKey
	}
	if k, ok := p.keys[s]; ok {
		return k, nil
	}
	return nil, errNoKey
}

// claimString renders a scalar claim as a header value; objects and arrays
// are not forwarded.
func claimString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return sanitize(v), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

// sanitize keeps a claim from smuggling a header line break or NUL
// upstream.
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
		return Denial(ReasonMalformedToken)
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i, k := range p.apiKeys {
		match = subtle.ConstantTimeSelect(subtle.ConstantTimeCompare(sum[:], k.sum[:]), i, match)
	}
	if match < 0 {
		return Denial(ReasonUnknownAPIKey)
	}
	d := Decision{Allow: true, Identity: sanitize(p.apiKeys[match].identity)}
	if p.IdentityHeader != "" && d.Identity != "" {
		d.Set = append(d.Set, [2]string{p.IdentityHeader, d.Identity})
	}
	return d
}
