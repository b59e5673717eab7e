package policy

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
)

const validPolicy = `
listeners:
  - name: public
    address: 127.0.0.1:10000
routes:
  - name: voice
    match: { path: /v1/voice }
    kind: websocket
    backend: voice
    auth: demo
    idle_timeout: 60s
backends:
  - name: voice
    endpoints: [127.0.0.1:8081]
auth_policies:
  - name: demo
    sources: [{ bearer: true }, { query: access_token }]
    jwt:
      keys: [{ kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi }]
`

func TestParseValid(t *testing.T) {
	p, err := Parse([]byte(validPolicy))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got := p.GetRoutes()[0].GetIdleTimeout().AsDuration().String(); got != "1m0s" {
		t.Errorf("idle_timeout = %s, want 1m0s", got)
	}
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(Marshal(p)): %v\n%s", err, out)
	}
	if !proto.Equal(p, again) {
		t.Errorf("round trip changed the policy:\n%s", out)
	}
}

func TestExamplePolicy(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	if _, err := LoadFile(filepath.Join(filepath.Dir(file), "..", "..", "examples", "policy.yaml")); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	replace := func(old, new string) string {
		if !strings.Contains(validPolicy, old) {
			t.Fatalf("test setup: %q not in policy", old)
		}
		return strings.Replace(validPolicy, old, new, 1)
	}
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"unknown field", replace("kind: websocket", "kind: websocket\n    colour: blue"), []string{"routes[0].colour: unknown field (line 9)"}},
		{"unknown nested field", replace("{ path: /v1/voice }", "{ pathh: /v1/voice }"), []string{"routes[0].match.pathh: unknown field"}},
		{"wrong type", replace("idle_timeout: 60s", "idle_timeout: 60"), []string{"routes[0].idle_timeout: want a duration string", "line 11"}},
		{"list expected", replace("endpoints: [127.0.0.1:8081]", "endpoints: 127.0.0.1:8081"), []string{"backends[0].endpoints: want a list"}},
		{"bool expected", replace("bearer: true", "bearer: yes please"), []string{"sources[0].bearer: want true or false"}},
		{"bad duration", replace("idle_timeout: 60s", "idle_timeout: soon"), []string{"decode policy"}},
		{"syntax", "listeners: [", []string{"parse policy"}},
		{"dangling backend", replace("backend: voice", "backend: nope"), []string{`routes[0].backend: no backend named "nope"`}},
		{"dangling auth", replace("auth: demo", "auth: nope"), []string{`routes[0].auth: no auth policy named "nope"`}},
		{"bad kind", replace("kind: websocket", "kind: grpc"), []string{`routes[0].kind: "grpc" is not`}},
		{"missing kind", replace("kind: websocket", ""), []string{"routes[0].kind: required"}},
		{"bad mode", replace("kind: websocket", "kind: websocket\n    mode: carrier-pigeon"), []string{"routes[0].mode"}},
		{"both path and prefix", replace("{ path: /v1/voice }", "{ path: /v1/voice, prefix: /v1/ }"), []string{"routes[0].match: prefix and path are exclusive"}},
		{"relative path", replace("{ path: /v1/voice }", "{ path: v1/voice }"), []string{"must start with '/'"}},
		{"bad endpoint", replace("127.0.0.1:8081", "voice.internal:8081"), []string{`backends[0].endpoints[0]: "voice.internal" is not an IP address`}},
		{"bad port", replace("127.0.0.1:10000", "127.0.0.1:99999"), []string{`listeners[0].address: "99999" is not a port`}},
		{"short key", replace("ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "c2hvcnQ"), []string{"auth_policies[0].jwt.keys[0].k: key is 5 bytes"}},
		{"unsupported alg", replace("alg: HS256", "alg: none"), []string{`jwt.keys[0].alg: "none" is not supported`}},
		{"empty source", replace("{ bearer: true }", "{}"), []string{"sources[0]: one of bearer, query and header"}},
		{"duplicate route", replace("routes:\n", "routes:\n  - { name: voice, match: { prefix: / }, kind: http, backend: voice }\n"), []string{`routes[1].name: "voice" is used twice`}},
		{"bad name", replace("name: voice\n    match", "name: Voice Route\n    match"), []string{"routes[0].name"}},
		{"no listeners", "routes: []", []string{"listeners: at least one listener"}},
		{"field twice", replace("kind: websocket", "kind: websocket\n    kind: http"), []string{"kind"}},
		{"reserved header", replace("sources:", "identity_header: authorization\n    sources:"), []string{`identity_header: "authorization" is reserved`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.input))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(validPolicy))
	f.Add([]byte("listeners: [{name: a, address: '1.2.3.4:5'}]"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		// What parses must survive a round trip: the admin API stores
		// policies by marshalling them.
		out, err := Marshal(p)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("Parse(Marshal(p)): %v\n%s", err, out)
		}
	})
}
