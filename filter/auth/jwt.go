package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

func (p *Policy) verifyJWT(token string, now time.Time) Decision {
	if !wellFormed(token) {
		return Denial(contract.ReasonMalformedToken)
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
		return Denial(contract.ReasonMalformedToken)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, errAlgMismatch):
		return Denial(contract.ReasonBadSignature)
	case errors.Is(err, jwt.ErrTokenExpired):
		return Denial(contract.ReasonExpiredToken)
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return Denial(contract.ReasonNotYetValid)
	default:
		return Denial(contract.ReasonInvalidToken)
	}
	if p.Issuer != "" {
		if iss, _ := claims["iss"].(string); iss != p.Issuer {
			return Denial(contract.ReasonInvalidIssuer)
		}
	}
	if len(p.Audiences) > 0 {
		aud, _ := claims.GetAudience()
		if !slices.ContainsFunc(p.Audiences, func(a string) bool { return slices.Contains(aud, a) }) {
			return Denial(contract.ReasonInvalidAudience)
		}
	}
	if missing := missingScopes(claims, p.RequiredScopes); missing {
		return Denial(contract.ReasonScope)
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

// missingScopes reports whether a required scope is absent from the
// "scope" and "scp" claims.
func missingScopes(claims jwt.MapClaims, required []string) bool {
	have := map[string]bool{}
	// Providers differ: RFC 8693 and RFC 9068 write "scope" as one
	// space-separated string, others write "scp", as a string or an
	// array. Every form counts.
	for _, name := range []string{"scope", "scp"} {
		switch v := claims[name].(type) {
		case string:
			for _, sc := range strings.Fields(v) {
				have[sc] = true
			}
		case []any:
			for _, sc := range v {
				if str, ok := sc.(string); ok {
					have[str] = true
				}
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
