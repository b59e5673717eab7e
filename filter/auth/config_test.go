package auth

import (
	"strings"
	"testing"
)

func TestParseConfigErrors(t *testing.T) {
	tests := map[string]string{
		"unknown field":   `{"routes":{},"policies":{},"extra":1}`,
		"dangling policy": `{"routes":{"r":"nope"},"policies":{}}`,
		"no sources":      `{"routes":{},"policies":{"p":{"api_keys":[{"sha256":"` + strings.Repeat("a", 64) + `"}]}}}`,
		"two in a source": `{"routes":{},"policies":{"p":{"sources":[{"bearer":true,"query":"t"}],"api_keys":[{"sha256":"` + strings.Repeat("a", 64) + `"}]}}}`,
		"no keys":         `{"routes":{},"policies":{"p":{"sources":[{"bearer":true}]}}}`,
		"bad key type":    `{"routes":{},"policies":{"p":{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"RSA","alg":"RS256"}]}}}}`,
		"bad hash":        `{"routes":{},"policies":{"p":{"sources":[{"bearer":true}],"api_keys":[{"sha256":"abc"}]}}}`,
		"null policy":     `{"routes":{},"policies":{"p":null}}`,
		"not json":        `{`,
		"trailing":        `{"routes":{},"policies":{}} {}`,
		"not an object":   `[]`,
		"null":            `null`,
		"single unknown":  `{"sources":[{"bearer":true}],"api_keys":[{"sha256":"` + strings.Repeat("a", 64) + `"}],"extra":1}`,
		"bad source hdr":  single(`"sources":[{"header":"x api"}]`),
		"pseudo claim":    single(`"claim_headers":{"sub":":path"}`),
		"reserved claim":  single(`"claim_headers":{"sub":"host"}`),
		"upper identity":  single(`"identity_header":"X-Id"`),
		"dup out header":  single(`"identity_header":"x-id","claim_headers":{"sub":"x-id"}`),
		"quote in realm":  single(`"realm":"a\"b"`),
		"negative max":    single(`"max_token_bytes":-1`),
		"negative leeway": single(`"leeway_seconds":-5`),
		"dup kid":         `{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0"},{"kty":"oct","alg":"HS256","k":"c2VjcmV0"}]}}`,
		"hmac alg on rsa": `{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","alg":"RS256","k":"c2VjcmV0"}]}}`,
		"alg none":        `{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","alg":"none","k":"c2VjcmV0"}]}}`,
		"empty k":         `{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","alg":"HS256","k":""}]}}`,
		"clients null":    `{"policies":{},"clients":{"r":null}}`,
		"clients empty":   `{"policies":{},"clients":{"r":{}}}`,
		"clients bad":     `{"policies":{},"clients":{"r":{"allow":["10.0.0.1/8"]}}}`,
		"clients field":   `{"policies":{},"clients":{"r":{"allow":["10.0.0.0/8"],"except":[]}}}`,
		"single clients":  single(`"clients":{"deny":["nope"]}`),
	}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseConfig([]byte(doc)); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// single is a valid single-policy document with extra fields.
func single(fields string) string {
	return `{"sources":[{"bearer":true}],"api_keys":[{"sha256":"` + strings.Repeat("a", 64) + `"}],` + fields + `}`
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"routes":{"r":"p"},"policies":{"p":{"sources":[{"bearer":true}],"jwks":{"keys":[{"kty":"oct","alg":"HS256","k":"c2VjcmV0"}]}}}}`))
	f.Add([]byte(briefConfig))
	f.Add([]byte(`{"sources":[{"header":"X-Key"}],"api_keys":[{"sha256":"` + strings.Repeat("0", 64) + `"}],"claim_headers":{"a":"x-a"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"policies":{}}`))
	f.Add([]byte(`{"routes":{"r":""},"policies":{}}`))
	f.Add([]byte(`{"policies":{},"clients":{"r":{"allow":["10.0.0.0/8","2001:db8::/32"],"deny":["10.1.0.0/16"]}}}`))
	f.Add([]byte(single(`"clients":{"allow":["127.0.0.0/8"]}`)))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		// A route with no policy is public by design (no route map, or
		// one mapping it to ""); what must never happen is a policy that
		// checks tokens letting a made-up one through.
		req := Request{Path: "/?access_token=x", Header: headers("authorization", "Bearer a.b.c", "x-key", "k")}
		if d, p := cfg.Check("r", req, now); d.Allow && p != nil && !p.Public {
			t.Errorf("a made-up token passed on route r: %+v", d)
		}
		// A list that parsed refuses an address that is no IP.
		for _, route := range []string{"r", UnnamedRoute} {
			if l := cfg.Clients(route); l != nil && l.Allows("not an address") {
				t.Errorf("route %q's client list let a non-address through", route)
			}
		}
		for name := range cfg.policies {
			if d, p := cfg.CheckTagged(name, req, now); d.Allow && !p.Public {
				t.Errorf("a made-up token passed policy %q: %+v", name, d)
			}
		}
	})
}
