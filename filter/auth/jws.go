package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"hash"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/directpipe/directpipe/filter/contract"
)

// A JWT here is a JWS in compact form (RFC 7515 §7.1) whose payload is a
// JSON claims set (RFC 7519): three base64url parts, the first two JSON
// objects. The verifier is small on purpose: it knows the algorithms of
// jwkAlgs and nothing else, so the module links only crypto/* for it.

// claims is a token's decoded claims set; numbers are float64.
type claims map[string]any

// verifyJWT checks, in this order, the form of the token, its algorithm
// against the key its kid names, the signature, then the registered
// claims' types, the time claims and the policy's issuer, audience and
// scopes. The order fixes which reason a token with several faults gets:
// nothing of the claims is believed before the signature is.
//
// An allowed token's decision is cached (see tokenCache); a denial never
// is, so a stream of bad tokens cannot push good ones out.
func (p *Policy) verifyJWT(token string, now time.Time) Decision {
	var sum [sha256.Size]byte
	if p.cache != nil {
		sum = sha256.Sum256([]byte(token))
		if d, ok := p.cache.get(sum, now); ok {
			d.Cache = CacheHit
			return d
		}
	}
	c, reason := p.verifiedClaims(token)
	if reason == "" {
		reason = checkClaimTypes(c)
	}
	if reason == "" {
		reason = p.checkTimes(c, now)
	}
	d := Denial(reason)
	if reason == "" {
		d = p.allowClaims(c)
	}
	if p.cache == nil {
		return d
	}
	if d.Allow {
		exp, _ := numericDate(c, "exp")
		p.cache.put(sum, d, exp.Add(p.leeway()), now)
	}
	d.Cache = CacheMiss
	return d
}

// verifiedClaims returns the claims of a token whose signature verifies
// with the key its header names, or the reason it is refused.
func (p *Policy) verifiedClaims(token string) (claims, string) {
	head, rest, ok1 := strings.Cut(token, ".")
	body, sig64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(sig64, ".") {
		return nil, contract.ReasonMalformedToken
	}
	// Decoded into maps, not structs: encoding/json matches struct fields
	// without regard to case, and "ALG" is not "alg".
	h, ok := decodePart(head, true)
	if !ok {
		return nil, contract.ReasonMalformedToken
	}
	c, ok := decodePart(body, false)
	if !ok {
		return nil, contract.ReasonMalformedToken
	}
	// Only the algorithms of configured keys: "none", a missing alg and
	// any algorithm no key is bound to are refused before a key is
	// looked up.
	alg, _ := h["alg"].(string)
	if !slices.Contains(p.algs, alg) {
		return nil, contract.ReasonBadSignature
	}
	k := p.keyFor(h["kid"])
	if k == nil {
		return nil, contract.ReasonInvalidToken
	}
	// Each key verifies only its own algorithm, whatever else the
	// policy's other keys allow (algorithm confusion).
	if alg != k.alg {
		return nil, contract.ReasonBadSignature
	}
	sig, err := base64.RawURLEncoding.DecodeString(sig64)
	if err != nil {
		return nil, contract.ReasonMalformedToken
	}
	if !k.verify(token[:len(head)+1+len(body)], sig, p.host) {
		return nil, contract.ReasonBadSignature
	}
	return c, ""
}

// decodePart decodes one base64url part holding a JSON object. Its
// members must each be named once (RFC 7515 §4, RFC 7519 §4: one reader
// must not see a different claim than another); a header must not carry
// "crit", since no extension is understood here (RFC 7515 §4.1.11).
func decodePart(part string, header bool) (map[string]any, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return nil, false
	}
	m, ok := parseObject(raw)
	if !ok {
		return nil, false
	}
	if _, crit := m["crit"]; crit && header {
		return nil, false
	}
	return m, true
}

// keyFor picks the key by kid; a token without kid may use the only key.
func (p *Policy) keyFor(kid any) *key {
	if kid == nil {
		if len(p.keys) == 1 {
			for _, k := range p.keys {
				return k
			}
		}
		return nil
	}
	s, ok := kid.(string)
	if !ok {
		return nil
	}
	return p.keys[s]
}

// hmacSum is HMAC (RFC 2104) of msg under key. crypto/hmac computes the
// same bytes, but in a Go Wasm VM under V8 it costs 15 times as much per
// token (127 µs against 8 µs for HS256, measured under Node's V8), which
// is most of a cold HS256 handshake; TestHMACSumMatchesCryptoHMAC holds
// the two equal.
func hmacSum(newHash func() hash.Hash, key, msg []byte) []byte {
	h := newHash()
	block := h.BlockSize()
	if len(key) > block {
		h.Write(key)
		key = h.Sum(nil)
		h.Reset()
	}
	pad := make([]byte, block)
	copy(pad, key)
	for i := range pad {
		pad[i] ^= 0x36
	}
	h.Write(pad)
	h.Write(msg)
	inner := h.Sum(nil)
	for i := range pad {
		pad[i] ^= 0x36 ^ 0x5c
	}
	h.Reset()
	h.Write(pad)
	h.Write(inner)
	return h.Sum(nil)
}

// hashOf is the hash an algorithm signs with.
func hashOf(alg string) (crypto.Hash, func() hash.Hash) {
	switch alg[2:] {
	case "384":
		return crypto.SHA384, sha512.New384
	case "512":
		return crypto.SHA512, sha512.New
	}
	return crypto.SHA256, sha256.New
}

// HostVerifier checks a signature with the host's own crypto: hash is
// "sha256", "sha384" or "sha512", spki the key's DER SubjectPublicKeyInfo,
// sig PKCS #1 v1.5 for RSA and DER for ECDSA, over signed. An error means
// the host could not check it, and the filter checks it itself, except
// ES* in the module, which has no NIST curves and refuses. Envoy's
// BoringSSL does in microseconds what Go's ECDSA in a Wasm VM does in
// milliseconds.
type HostVerifier func(hash string, spki, sig, signed []byte) (bool, error)

// UseHostVerifier makes every policy check RS* and ES* signatures with v.
func (c *Config) UseHostVerifier(v HostVerifier) {
	if c.single != nil {
		c.single.host = v
	}
	for _, p := range c.policies {
		p.host = v
	}
}

// verify checks a signature over the token's first two parts with the
// key, by the key's own algorithm: by the host when it can, else here.
func (k *key) verify(signed string, sig []byte, host HostVerifier) bool {
	if host != nil && k.spki != nil {
		hostSig := sig
		if k.alg[0] == 'E' {
			size := curveOf(k.alg).size
			if len(sig) != 2*size {
				return false
			}
			hostSig = ecdsaDER(sig, size)
		}
		if ok, err := host("sha"+k.alg[2:], k.spki, hostSig, []byte(signed)); err == nil {
			return ok
		}
	}
	if k.alg == "EdDSA" {
		return ed25519.Verify(k.material.(ed25519.PublicKey), []byte(signed), sig)
	}
	id, newHash := hashOf(k.alg)
	if k.alg[0] == 'H' {
		return hmac.Equal(sig, hmacSum(newHash, k.material.([]byte), []byte(signed)))
	}
	h := newHash()
	h.Write([]byte(signed))
	digest := h.Sum(nil)
	switch k.alg[0] {
	case 'R':
		return rsa.VerifyPKCS1v15(k.material.(*rsa.PublicKey), id, digest, sig) == nil
	case 'P':
		// Any salt length, as the JWT libraries that sign PS256 differ.
		return rsa.VerifyPSS(k.material.(*rsa.PublicKey), id, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) == nil
	}
	// ES256 and ES384: R and S, each as long as the curve's field (RFC
	// 7518 §3.4), not DER.
	size := curveOf(k.alg).size
	if len(sig) != 2*size {
		return false
	}
	return verifyECDSA(k.alg, k.material.([]byte), digest, ecdsaDER(sig, size))
}

// checkClaimTypes holds the registered claims to the types RFC 7519 §4.1
// gives them: iss, sub and jti strings, aud a string or an array of
// strings (the times are checkTimes's). A token where one has another
// type, null included, is invalid: JWT readers differ on such a claim
// (go-jose takes a null sub as absent, Envoy's jwt_authn refuses a sub
// that is not a string), and the back end must not be told of a caller
// that another reader of the same token would refuse.
func checkClaimTypes(c claims) string {
	for _, name := range []string{"iss", "sub", "jti"} {
		if v, ok := c[name]; ok {
			if _, ok := v.(string); !ok {
				return contract.ReasonInvalidToken
			}
		}
	}
	if v, ok := c["aud"]; ok && audiences(v) == nil {
		return contract.ReasonInvalidToken
	}
	return ""
}

// checkTimes applies exp (required), nbf and iat with the policy's leeway.
// A time claim that is not a number is an invalid token.
func (p *Policy) checkTimes(c claims, now time.Time) string {
	leeway := p.leeway()
	exp, ok := numericDate(c, "exp")
	if !ok || exp.IsZero() {
		return contract.ReasonInvalidToken
	}
	if !now.Before(exp.Add(leeway)) {
		return contract.ReasonExpiredToken
	}
	if exp.Sub(now) > p.maxLifetime()+leeway {
		// Valid for longer than any token this policy accepts.
		return contract.ReasonInvalidToken
	}
	for _, name := range []string{"nbf", "iat"} {
		t, ok := numericDate(c, name)
		if !ok {
			return contract.ReasonInvalidToken
		}
		if !t.IsZero() && now.Add(leeway).Before(t) {
			return contract.ReasonNotYetValid
		}
	}
	return ""
}

// numericDate reads a NumericDate claim (RFC 7519 §2) in whole seconds:
// the zero time when it is absent, false when it is not a number.
func numericDate(c claims, name string) (time.Time, bool) {
	v, present := c[name]
	if !present {
		return time.Time{}, true
	}
	f, ok := v.(float64)
	if !ok || math.IsNaN(f) {
		return time.Time{}, false
	}
	// Far beyond any real date, and within int64 seconds.
	f = max(min(f, 1<<53), -(1 << 53))
	return time.Unix(int64(math.Floor(f)), 0), true
}

// allowClaims applies the policy's issuer, audience and scopes to verified
// claims and builds the decision with the identity and claim headers.
func (p *Policy) allowClaims(c claims) Decision {
	if p.Issuer != "" {
		if iss, _ := c["iss"].(string); iss != p.Issuer {
			return Denial(contract.ReasonInvalidIssuer)
		}
	}
	if len(p.Audiences) > 0 {
		aud := audiences(c["aud"])
		if !slices.ContainsFunc(p.Audiences, func(a string) bool { return slices.Contains(aud, a) }) {
			return Denial(contract.ReasonInvalidAudience)
		}
	}
	if missingScopes(c, p.RequiredScopes) {
		return Denial(contract.ReasonScope)
	}
	d := Decision{Allow: true}
	sub, _ := c["sub"].(string)
	switch {
	case sub != "" && !HeaderSafe(sub):
		return Denial(contract.ReasonInvalidToken)
	case sub == "" && p.IdentityHeader != "":
		// The identity header names the caller; a token that names
		// nobody must not pass as an anonymous caller.
		return Denial(contract.ReasonInvalidToken)
	}
	d.Identity = sub
	for _, claim := range p.claims {
		v, ok := claimString(c[claim])
		if !ok || v == "" {
			continue
		}
		if !HeaderSafe(v) {
			return Denial(contract.ReasonInvalidToken)
		}
		d.Set = append(d.Set, [2]string{p.ClaimHeaders[claim], v})
	}
	if p.IdentityHeader != "" {
		d.Set = append(d.Set, [2]string{p.IdentityHeader, d.Identity})
	}
	return d
}

// audiences reads "aud": one string or an array of strings (RFC 7519
// §4.1.3), an empty array naming none; anything else is nil.
func audiences(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, a := range v {
			s, ok := a.(string)
			if !ok {
				return nil
			}
			out = append(out, s)
		}
		return out
	}
	return nil
}

// missingScopes reports whether a required scope is absent from the
// "scope" and "scp" claims.
func missingScopes(c claims, required []string) bool {
	have := map[string]bool{}
	// Providers differ: RFC 8693 and RFC 9068 write "scope" as one
	// space-separated string, others write "scp", as a string or an
	// array. Every form counts.
	for _, name := range []string{"scope", "scp"} {
		switch v := c[name].(type) {
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

// claimString renders a scalar claim as a header value; objects and arrays
// are not forwarded.
func claimString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}
