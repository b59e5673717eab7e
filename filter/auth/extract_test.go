package auth

import (
	"strings"
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
	"github.com/golang-jwt/jwt/v5"
)

func TestSubprotocolToken(t *testing.T) {
	cfg := keyConfig(t, []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": b64u(secret)}}, nil)
	tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	tests := []struct {
		name, header string
		set          string // the rewritten header, "" when removed
		removed      bool
	}{
		{"token last", "voice.v1, dp.bearer." + tok, "voice.v1", false},
		{"token first, two kept", "dp.bearer." + tok + ",voice.v1 ,  chat", "voice.v1, chat", false},
		{"token alone", "dp.bearer." + tok, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := cfg.Check("r", Request{Header: headers("sec-websocket-protocol", tt.header)}, now)
			if !d.Allow {
				t.Fatalf("denied: %+v", d)
			}
			var set string
			for _, kv := range d.Set {
				if kv[0] == "sec-websocket-protocol" {
					set = kv[1]
				}
			}
			if set != tt.set || contains(d.Remove, "sec-websocket-protocol") != tt.removed {
				t.Errorf("set %q removed %v; want %q %v", set, contains(d.Remove, "sec-websocket-protocol"), tt.set, tt.removed)
			}
		})
	}
	if d, _ := cfg.Check("r", Request{Header: headers("sec-websocket-protocol", "voice.v1")}, now); d.Reason != contract.ReasonMissingToken {
		t.Errorf("no token entry: %+v", d)
	}
}

// TestTwoSubprotocolTokensRefused: a handshake offering two token entries
// is refused, whichever is valid, and however the entries are spread over
// header lines (joined with ", " as RFC 9110 §5.3 reads them): a back end
// must never be handed an entry that was not checked (regression: only
// the first was removed, and the second went upstream).
func TestTwoSubprotocolTokensRefused(t *testing.T) {
	cfg := keyConfig(t, []map[string]string{{"kty": "oct", "kid": "dev", "alg": "HS256", "k": b64u(secret)}}, nil)
	tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	for _, header := range []string{
		"dp.bearer." + tok + ", dp.bearer." + tok,
		"dp.bearer." + tok + ", voice.v1, dp.bearer.forged",
		"dp.bearer.forged, dp.bearer." + tok,
		"voice.v1, dp.bearer." + tok + ", dp.bearer.",
	} {
		d, _ := cfg.Check("r", Request{Header: headers("sec-websocket-protocol", header)}, now)
		if d.Allow || d.Reason != contract.ReasonMalformedToken || d.Status != 401 {
			t.Errorf("%.40s...: %+v, want 401 %s", header, d, contract.ReasonMalformedToken)
		}
	}
}

// TestTwoQueryTokensRefused: the query source follows the same rule as
// the subprotocol one: two token parameters, even if both are stripped,
// are refused rather than one picked.
func TestTwoQueryTokensRefused(t *testing.T) {
	cfg := testConfig(t)
	tok := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	for _, path := range []string{
		"/v1/voice?access_token=" + tok + "&access_token=" + tok,
		"/v1/voice?access_token=forged&a=1&access_token=" + tok,
		"/v1/voice?access_token=" + tok + "&access%5Ftoken=x",
	} {
		d, _ := cfg.Check("voice", Request{Path: path, Header: headers()}, now)
		if d.Allow || d.Reason != contract.ReasonMalformedToken {
			t.Errorf("%.40s...: %+v, want 401 %s", path, d, contract.ReasonMalformedToken)
		}
	}
	if d, _ := cfg.Check("voice", Request{Path: "/v1/voice?access_token=" + tok + "&b=access_token", Header: headers()}, now); !d.Allow {
		t.Errorf("one token parameter: %+v", d)
	}
}

func TestCutSubprotocol(t *testing.T) {
	tests := []struct {
		header, token, rest string
		n                   int
	}{
		{"voice.v1", "", "voice.v1", 0},
		{"dp.bearer.a", "a", "", 1},
		{"x, dp.bearer.a ,y", "a", "x, y", 1},
		{"dp.bearer.a, x, dp.bearer.b", "a", "x", 2},
		{" , dp.bearer.a,,", "a", "", 1},
	}
	for _, tt := range tests {
		token, rest, n := cutSubprotocol(tt.header, "dp.bearer.")
		if token != tt.token || rest != tt.rest || n != tt.n {
			t.Errorf("cutSubprotocol(%q) = %q %q %d, want %q %q %d", tt.header, token, rest, n, tt.token, tt.rest, tt.n)
		}
	}
}

// TestPathReadOnlyForQueryTokens: a request without Path has :path read
// through Header only by a policy with a query token source, which finds
// and strips the token there as it does in Path.
func TestPathReadOnlyForQueryTokens(t *testing.T) {
	cfg := testConfig(t)
	bearerOnly, err := ParseConfig([]byte(`{"name":"one","sources":[{"bearer":true}],"api_keys":[{"sha256":"` + strings.Repeat("0", 64) + `","identity":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	good := mint(t, jwt.SigningMethodHS256, secret, "dev", valid())
	for _, tt := range []struct {
		name     string
		check    func(Request) Decision
		path     string
		readPath bool
		allow    bool
	}{
		{"a query token source", func(r Request) Decision { d, _ := cfg.Check("voice", r, now); return d },
			"/v1/voice?x=1&access_token=" + good, true, true},
		{"a public route", func(r Request) Decision { d, _ := cfg.Check("public", r, now); return d },
			"/v1/voice?access_token=" + good, false, true},
		{"a public tag", func(r Request) Decision { d, _ := cfg.CheckTagged("", r, now); return d },
			"/v1/voice?x=1", false, true},
		{"no query token source", func(r Request) Decision { d, _ := bearerOnly.Check("", r, now); return d },
			"/v1/voice?access_token=" + good, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			read := false
			h := headers(":path", tt.path)
			d := tt.check(Request{Header: func(name string) (string, bool) {
				read = read || name == ":path"
				return h(name)
			}})
			if read != tt.readPath {
				t.Errorf(":path read: %v, want %v", read, tt.readPath)
			}
			if d.Allow != tt.allow {
				t.Fatalf("%+v, want allow %v", d, tt.allow)
			}
			if tt.readPath && d.Path != "/v1/voice?x=1" {
				t.Errorf("path after stripping: %q, want /v1/voice?x=1", d.Path)
			}
		})
	}
}
