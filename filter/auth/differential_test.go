package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/directpipe/directpipe/filter/contract"
)

// The filter verifies JWTs with its own compact-JWS parser and crypto/*.
// These tests hold it to go-jose, an independent JOSE implementation,
// as the oracle: go-jose writes every key as a JWK and signs every token,
// in every algorithm the filter supports, and the same token, key and
// time must get the same verdict (allow or deny) from both. go-jose is
// only ever a test dependency.

const diffKid = "k"

// diffKey is one signing key, the filter's config for its public half and
// what go-jose verifies with.
type diffKey struct {
	alg     jose.SignatureAlgorithm
	signing any
	public  any
	cfg     *Config
	// hosted is the same config with signatures checked by testHost, as
	// Envoy checks RS* and ES* for the module.
	hosted *Config
}

func diffKeys(t testing.TB) []diffKey {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	edPub, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	hmacKey := make([]byte, 64)
	rand.Read(hmacKey)
	keys := []diffKey{
		{alg: jose.HS256, signing: hmacKey[:32], public: hmacKey[:32]},
		{alg: jose.HS384, signing: hmacKey[:48], public: hmacKey[:48]},
		{alg: jose.HS512, signing: hmacKey, public: hmacKey},
		{alg: jose.RS256, signing: rsaKey, public: &rsaKey.PublicKey},
		{alg: jose.RS384, signing: rsaKey, public: &rsaKey.PublicKey},
		{alg: jose.RS512, signing: rsaKey, public: &rsaKey.PublicKey},
		{alg: jose.PS256, signing: rsaKey, public: &rsaKey.PublicKey},
		{alg: jose.ES256, signing: p256, public: &p256.PublicKey},
		{alg: jose.ES384, signing: p384, public: &p384.PublicKey},
		{alg: jose.EdDSA, signing: edPriv, public: edPub},
	}
	for i, k := range keys {
		jwk, err := json.Marshal(jose.JSONWebKey{Key: k.public, KeyID: diffKid, Algorithm: string(k.alg)})
		if err != nil {
			t.Fatal(err)
		}
		// The cache off: every verdict is a verification.
		doc := []byte(`{"sources":[{"bearer":true}],"leeway_seconds":30,"token_cache":{"max_entries":-1},"jwks":{"keys":[` + string(jwk) + `]}}`)
		if keys[i].cfg, err = ParseConfig(doc); err != nil {
			t.Fatal(err)
		}
		if keys[i].hosted, err = ParseConfig(doc); err != nil {
			t.Fatal(err)
		}
		keys[i].hosted.UseHostVerifier(testHost)
	}
	return keys
}

// testHost verifies as a host reading the filter's encodings would: the
// key from its DER SubjectPublicKeyInfo, an ECDSA signature in DER.
func testHost(hash string, spki, sig, signed []byte) (bool, error) {
	pub, err := x509.ParsePKIXPublicKey(spki)
	if err != nil {
		return false, err
	}
	h := map[string]crypto.Hash{"sha256": crypto.SHA256, "sha384": crypto.SHA384, "sha512": crypto.SHA512}[hash]
	if h == 0 {
		return false, errors.New("unknown hash " + hash)
	}
	d := h.New()
	d.Write(signed)
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, h, d.Sum(nil), sig) == nil, nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(pub, d.Sum(nil), sig), nil
	}
	return false, errors.New("unexpected key type")
}

// sign makes a compact JWS of any header and payload bytes with the key,
// through go-jose's signer, so the signature is go-jose's own.
func (k diffKey) sign(t testing.TB, header map[string]any, payload []byte) string {
	t.Helper()
	tok := k.signed(header, string(payload))
	if tok == "" {
		t.Fatalf("go-jose refuses to sign %v", header)
	}
	return tok
}

// oracle is go-jose's verdict on a token for the filter's rules: the
// key's algorithm only, a kid that is absent or the key's, a verified
// signature, exp required and at most a day ahead, and exp, nbf and iat
// with the leeway.
func (k diffKey) oracle(token string, now time.Time, leeway time.Duration) bool {
	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{k.alg})
	if err != nil || len(tok.Headers) != 1 {
		return false
	}
	// go-jose reads an empty kid as none; the filter, as a kid naming no
	// key. So the kid is read from the header itself.
	if kid, ok := headerMember(token, "kid"); ok && kid != nil && kid != diffKid {
		return false
	}
	var c josejwt.Claims
	if err := tok.Claims(k.public, &c); err != nil || c.Expiry == nil {
		return false
	}
	// The filter also bounds how far ahead exp may be (the policy's
	// max_token_lifetime_seconds, here the default), which go-jose does
	// not.
	if c.Expiry.Time().Sub(now) > contract.DefaultMaxTokenLifetimeSeconds*time.Second+leeway {
		return false
	}
	// And it refuses a sub that could read as another name (HeaderSafe
	// is table-tested on its own).
	if c.Subject != "" && !HeaderSafe(c.Subject) {
		return false
	}
	return c.ValidateWithLeeway(josejwt.Expected{Time: now}, leeway) == nil
}

// headerMember is a member of a compact JWS's header, and whether the
// header has it.
func headerMember(token, name string) (any, bool) {
	head, _, _ := strings.Cut(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(head)
	if err != nil {
		return nil, false
	}
	var h map[string]any
	if json.Unmarshal(raw, &h) != nil {
		return nil, false
	}
	v, ok := h[name]
	return v, ok
}

// filter is the filter's verdict, checking the signature itself and with
// the host; the two must agree.
func (k diffKey) filter(t testing.TB, token string, now time.Time) bool {
	t.Helper()
	d, _ := k.cfg.Check("", Request{Header: headers("authorization", "Bearer "+token)}, now)
	hosted, _ := k.hosted.Check("", Request{Header: headers("authorization", "Bearer "+token)}, now)
	if d.Allow != hosted.Allow || d.Reason != hosted.Reason {
		t.Errorf("the host's check disagrees: %+v, alone %+v (%s)", hosted, d, token)
	}
	return d.Allow
}

// TestDifferentialAgainstJOSE: valid tokens, every way this filter must
// refuse one, and forms where two JSON readers might disagree.
func TestDifferentialAgainstJOSE(t *testing.T) {
	keys := diffKeys(t)
	exp := now.Add(time.Hour).Unix()
	claims := func(extra string) []byte {
		return []byte(`{"sub":"alice","exp":` + itoa(exp) + extra + `}`)
	}
	kid := map[string]any{"kid": diffKid}
	for _, k := range keys {
		t.Run(string(k.alg), func(t *testing.T) {
			valid := k.sign(t, kid, claims(""))
			parts := strings.Split(valid, ".")
			head, _ := base64.RawURLEncoding.DecodeString(parts[0])
			cases := map[string]string{
				"valid":               valid,
				"no kid":              k.sign(t, nil, claims("")),
				"wrong kid":           k.sign(t, map[string]any{"kid": "other"}, claims("")),
				"kid not a string":    k.sign(t, map[string]any{"kid": 7}, claims("")),
				"kid empty":           k.sign(t, map[string]any{"kid": ""}, claims("")),
				"kid null":            k.sign(t, map[string]any{"kid": nil}, claims("")),
				"expired":             k.sign(t, kid, []byte(`{"exp":`+itoa(now.Add(-time.Minute).Unix())+`}`)),
				"expired in leeway":   k.sign(t, kid, []byte(`{"exp":`+itoa(now.Add(-20*time.Second).Unix())+`}`)),
				"no exp":              k.sign(t, kid, []byte(`{"sub":"alice"}`)),
				"exp a string":        k.sign(t, kid, []byte(`{"exp":"`+itoa(exp)+`"}`)),
				"exp with a fraction": k.sign(t, kid, []byte(`{"exp":`+itoa(exp)+`.5}`)),
				"exp in e-notation":   k.sign(t, kid, []byte(`{"exp":1.9e9}`)),
				"nbf ahead":           k.sign(t, kid, claims(`,"nbf":`+itoa(now.Add(time.Minute).Unix()))),
				"nbf in leeway":       k.sign(t, kid, claims(`,"nbf":`+itoa(now.Add(20*time.Second).Unix()))),
				"iat ahead":           k.sign(t, kid, claims(`,"iat":`+itoa(now.Add(time.Hour).Unix()))),
				"sub a number":        k.sign(t, kid, claims(`,"sub":5`)),
				"iss a number":        k.sign(t, kid, claims(`,"iss":5`)),
				"jti a number":        k.sign(t, kid, claims(`,"jti":5`)),
				"aud a number":        k.sign(t, kid, claims(`,"aud":5`)),
				"aud of numbers":      k.sign(t, kid, claims(`,"aud":[1]`)),
				"aud null":            k.sign(t, kid, claims(`,"aud":null`)),
				"aud empty":           k.sign(t, kid, claims(`,"aud":[]`)),
				"claims not object":   k.sign(t, kid, []byte(`["exp"]`)),
				"claims null":         k.sign(t, kid, []byte(`null`)),
				"claims not JSON":     k.sign(t, kid, []byte(`{"exp":`)),
				"crit":                k.sign(t, map[string]any{"kid": diffKid, "crit": []string{"exp"}, "exp": 1}, claims("")),
				"tampered payload":    parts[0] + "." + b64(string(claims(`,"admin":true`))) + "." + parts[2],
				"tampered signature":  parts[0] + "." + parts[1] + "." + flip(parts[2]),
				"no signature":        parts[0] + "." + parts[1] + ".",
				"short signature":     parts[0] + "." + parts[1] + "." + parts[2][:len(parts[2])-4],
				"four parts":          valid + ".",
				"two parts":           parts[0] + "." + parts[1],
				"padded signature":    valid + "==",
				"alg none":            b64(`{"alg":"none","kid":"k"}`) + "." + parts[1] + ".",
				"alg upper case":      b64(strings.Replace(string(head), `"alg"`, `"ALG"`, 1)) + "." + parts[1] + "." + parts[2],
				"alg another":         b64(strings.Replace(string(head), string(k.alg), "HS384", 1)) + "." + parts[1] + "." + parts[2],
				"duplicate alg":       b64(strings.Replace(string(head), "{", `{"alg":"none",`, 1)) + "." + parts[1] + "." + parts[2],
			}
			// The classic confusion: HS256 over the token, keyed with the
			// public key's bytes, for an asymmetric key.
			if der, err := x509.MarshalPKIXPublicKey(k.public); err == nil {
				cases["HMAC with the public key"] = diffKey{alg: jose.HS256, signing: der}.sign(t, kid, claims(""))
			}
			// A duplicate claim can only be built by hand: sign it.
			cases["duplicate exp"] = k.sign(t, kid, []byte(`{"exp":1,"exp":`+itoa(exp)+`}`))
			// Where go-jose is laxer than the RFCs, the filter refuses
			// and go-jose is not asked.
			stricter := map[string]string{
				// RFC 7797 §6: b64 must be listed in crit; go-jose signs
				// and verifies the raw payload without it.
				"b64 false without crit": k.sign(t, map[string]any{"kid": diffKid, "b64": false}, claims("")),
				// RFC 7515 §4.1.11: producers must not send an empty
				// crit; go-jose accepts one, the filter refuses any crit.
				"crit empty": k.sign(t, map[string]any{"kid": diffKid, "crit": []string{}}, claims("")),
				"crit null":  k.sign(t, map[string]any{"kid": diffKid, "crit": nil}, claims("")),
				// go-jose takes a null string or time claim as absent;
				// the filter refuses a registered claim of the wrong
				// type, null included (checkClaimTypes, checkTimes).
				"sub null": k.sign(t, kid, []byte(`{"exp":`+itoa(exp)+`,"sub":null}`)),
				"iat null": k.sign(t, kid, claims(`,"iat":null`)),
			}
			// Header members the filter never reads, where go-jose parses
			// them and refuses a token whose values do not parse: the
			// filter takes keys only from its config, so a token's own
			// "jwk" or "x5c" is not looked at, let alone trusted.
			ignored := map[string]string{
				"jwk not a key":          k.sign(t, map[string]any{"kid": diffKid, "jwk": 1}, claims("")),
				"x5c not a certificate":  k.sign(t, map[string]any{"kid": diffKid, "x5c": []string{"AAAA"}}, claims("")),
				"nonce not a string":     k.sign(t, map[string]any{"kid": diffKid, "nonce": 1}, claims("")),
				"jwk another public key": k.sign(t, map[string]any{"kid": diffKid, "jwk": map[string]any{"kty": "oct", "k": "AAAA"}}, claims("")),
			}
			for name, tok := range ignored {
				if !k.filter(t, tok, now) {
					t.Errorf("%s: the filter refuses it (%s)", name, tok)
				}
			}
			for name, tok := range stricter {
				if k.filter(t, tok, now) {
					t.Errorf("%s: the filter allows it (%s)", name, tok)
				}
			}
			for name, tok := range cases {
				want := k.oracle(tok, now, 30*time.Second)
				if got := k.filter(t, tok, now); got != want {
					t.Errorf("%s: filter allows %v, go-jose %v (%s)", name, got, want, tok)
				}
			}
			if !k.filter(t, valid, now) {
				t.Error("the valid token is refused")
			}
		})
	}
}

// FuzzDifferential signs any header and claims with each key and checks
// that the filter and go-jose agree. Times outside ±2^53 seconds are left
// out: go-jose converts them to int64 with Go's unspecified overflow.
func FuzzDifferential(f *testing.F) {
	keys := diffKeys(f)
	f.Add(`{"kid":"k"}`, `{"sub":"alice","exp":2000000000}`, uint8(0))
	f.Add(`{}`, `{"exp":1000,"nbf":10}`, uint8(1))
	f.Add(`{"kid":"k","crit":["b64"],"b64":false}`, `{"exp":2000000000,"iat":1.5}`, uint8(2))
	f.Add(`{"b64":false}`, `{"exp":2000000000}`, uint8(0))
	f.Add(`{"kid":"k"}`, `{"sub":"ad\u0000min","exp":1795000000}`, uint8(0))
	f.Add(`{"kid":"k"}`, `{"sub":"admin ","exp":1e20}`, uint8(3))
	f.Fuzz(func(t *testing.T, header, payload string, which uint8) {
		k := keys[int(which)%len(keys)]
		var h map[string]any
		if json.Unmarshal([]byte(header), &h) != nil || len(header) > 512 || len(payload) > 2048 {
			return
		}
		if _, ok := h["alg"]; ok {
			return // go-jose's signer writes alg itself
		}
		var c map[string]any
		if json.Unmarshal([]byte(payload), &c) == nil {
			for _, name := range []string{"exp", "nbf", "iat"} {
				if f, ok := c[name].(float64); ok && (math.Abs(f) > 1<<53 || f != math.Trunc(f)) {
					return
				}
			}
		}
		tok := k.signed(h, payload)
		if tok == "" {
			return
		}
		got := k.filter(t, tok, now)
		if _, crit := h["crit"]; crit || h["b64"] == false || hasNullRegisteredClaim(c) {
			// Where go-jose is laxer than the RFCs the filter refuses by
			// design and go-jose is not asked (see the stricter cases in
			// TestDifferential): go-jose verifies the raw payload when
			// b64 is false even without the "crit" RFC 7797 §6 requires,
			// accepts an empty crit, which RFC 7515 §4.1.11 forbids, and
			// takes a null registered claim as absent. The filter
			// understands no extension, refuses any crit, and refuses a
			// registered claim that is not of its RFC 7519 type.
			if got {
				t.Errorf("the filter allows a token it must refuse: %s", tok)
			}
			return
		}
		// go-jose parses the "jwk", "x5c" and "nonce" header members
		// and refuses a token where one does not parse; the filter reads
		// none of them (see the ignored cases in TestDifferential). Its
		// verdict must be go-jose's on the token signed without them.
		oracleTok := tok
		if stripped := withoutMembers(h, "jwk", "x5c", "nonce"); len(stripped) != len(h) {
			if oracleTok = k.signed(stripped, payload); oracleTok == "" {
				return
			}
		}
		if want := k.oracle(oracleTok, now, 30*time.Second); got != want {
			t.Errorf("filter allows %v, go-jose %v: %s", got, want, tok)
		}
	})
}

// hasNullRegisteredClaim reports whether a claims set names a registered
// claim (RFC 7519 §4.1) with a null value.
func hasNullRegisteredClaim(c map[string]any) bool {
	for _, name := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"} {
		if v, ok := c[name]; ok && v == nil {
			return true
		}
	}
	return false
}

// withoutMembers is a copy of a header without the named members.
func withoutMembers(h map[string]any, names ...string) map[string]any {
	out := maps.Clone(h)
	for _, name := range names {
		delete(out, name)
	}
	return out
}

// signed is the payload signed by go-jose with the key and extra
// headers, or "" where go-jose refuses to sign it.
func (k diffKey) signed(h map[string]any, payload string) string {
	opts := &jose.SignerOptions{}
	for name, v := range h {
		opts.WithHeader(jose.HeaderKey(name), v)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.signing}, opts)
	if err != nil {
		return ""
	}
	obj, err := signer.Sign([]byte(payload))
	if err != nil {
		return ""
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		return ""
	}
	return tok
}

func itoa(n int64) string { b, _ := json.Marshal(n); return string(b) }

// flip changes the first character of a base64url string.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}
