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
	tcpRoute := replace("kind: websocket", "kind: websocket\n    mode: tcp\n    tcp: { address: 127.0.0.1:10001 }")
	// split gives route voice a weighted split over voice and a second
	// back end, voice2.
	split := func(policy, backends string) string {
		policy = strings.Replace(policy, "backend: voice", backends, 1)
		return strings.Replace(policy, "endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n  - { name: voice2, endpoints: [127.0.0.1:8083] }", 1)
	}
	tests := []struct {
		name  string
		input string
		want  []string
	}{
		{"unknown field", replace("kind: websocket", "kind: websocket\n    colour: blue"), []string{"routes[0].colour: unknown field (line 9)"}},
		{"unknown nested field", replace("{ path: /v1/voice }", "{ pathh: /v1/voice }"), []string{"routes[0].match.pathh: unknown field"}},
		{"wrong type", replace("idle_timeout: 60s", "idle_timeout: 60"), []string{"routes[0].idle_timeout: want a duration in seconds", "line 11"}},
		{"duration without a unit", replace("idle_timeout: 60s", `idle_timeout: "60"`), []string{`routes[0].idle_timeout: want a duration in seconds with the unit s, such as "30s" or "0.5s", got "60" (line 11)`}},
		{"duration in minutes", replace("idle_timeout: 60s", "idle_timeout: 1m"), []string{`routes[0].idle_timeout: want a duration in seconds`, `got "1m" (line 11)`}},
		{"list expected", replace("endpoints: [127.0.0.1:8081]", "endpoints: 127.0.0.1:8081"), []string{"backends[0].endpoints: want a list"}},
		{"bool expected", replace("bearer: true", "bearer: yes please"), []string{"sources[0].bearer: want true or false"}},
		{"bad duration", replace("idle_timeout: 60s", "idle_timeout: soon"), []string{`routes[0].idle_timeout: want a duration in seconds`, `got "soon" (line 11)`}},
		{"syntax", "listeners: [", []string{"parse policy"}},
		{"dangling backend", replace("backend: voice", "backend: nope"), []string{`routes[0].backend: no backend named "nope" (line 9)`}},
		{"dangling auth", replace("auth: demo", "auth: nope"), []string{`routes[0].auth: no auth policy named "nope"`}},
		{"bad kind", replace("kind: websocket", "kind: grpc"), []string{`routes[0].kind: "grpc" is not`}},
		{"missing kind", replace("kind: websocket", ""), []string{"routes[0].kind: required"}},
		{"bad mode", replace("kind: websocket", "kind: websocket\n    mode: carrier-pigeon"), []string{"routes[0].mode"}},
		{"both path and prefix", replace("{ path: /v1/voice }", "{ path: /v1/voice, prefix: /v1/ }"), []string{"routes[0].match: prefix and path are exclusive"}},
		{"relative path", replace("{ path: /v1/voice }", "{ path: v1/voice }"), []string{"must start with '/'"}},
		{"bad endpoint", replace("127.0.0.1:8081", "Voice_Internal:8081"), []string{`backends[0].endpoints[0]: "Voice_Internal" is neither an IP address nor a lower-case DNS name`}},
		{"endpoint without port", replace("127.0.0.1:8081", "voice.internal"), []string{`backends[0].endpoints[0]: "voice.internal" is not host:port`}},
		{"metadata by name", replace("127.0.0.1:8081", "metadata.google.internal:80"), []string{"backends[0].endpoints[0]: metadata.google.internal is a cloud metadata service's name"}},
		{"dns refresh too short", replace("endpoints: [127.0.0.1:8081]", "endpoints: [voice.internal:8081]\n    dns_refresh: 0.5s"), []string{"backends[0].dns_refresh: at least 1s"}},
		{"draining endpoint not listed", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    draining_endpoints: [127.0.0.1:8089]"), []string{`backends[0].draining_endpoints[0]: "127.0.0.1:8089" is not one of the endpoints`}},
		{"no endpoints", replace("endpoints: [127.0.0.1:8081]", "endpoints: []"), []string{"backends[0].endpoints: at least one endpoint is required"}},
		{"backend and backends", replace("backend: voice", "backend: voice\n    backends: [{ name: voice, weight: 1 }, { name: voice, weight: 1 }]"), []string{"routes[0].backends: backend and backends are exclusive"}},
		{"split of one", replace("backend: voice", "backends: [{ name: voice, weight: 1 }]"), []string{"routes[0].backends: a split needs at least two back ends"}},
		{"split twice and unknown", replace("backend: voice", "backends: [{ name: voice, weight: 1 }, { name: voice, weight: 1 }, { name: nope, weight: 1 }]"),
			[]string{`routes[0].backends[1].name: "voice" is listed twice`, `routes[0].backends[2].name: no backend named "nope"`}},
		{"split weights", split(validPolicy, "backends: [{ name: voice, weight: 0 }, { name: voice2, weight: 0 }]"),
			[]string{"routes[0].backends: at least one weight must be positive"}},
		{"split weight too big", split(validPolicy, "backends: [{ name: voice, weight: 10001 }, { name: voice2, weight: 1 }]"),
			[]string{"routes[0].backends[0].weight: at most 10000"}},
		{"split with max_connections", split(validPolicy, "max_connections: 5\n    backends: [{ name: voice, weight: 1 }, { name: voice2, weight: 1 }]"),
			[]string{"routes[0].max_connections: not with a weighted split"}},
		{"split in tcp mode", split(tcpRoute, "backends: [{ name: voice, weight: 1 }, { name: voice2, weight: 1 }]"),
			[]string{"routes[0].backends: a tcp route forwards to one back end"}},
		{"redirect on a websocket route", replace("backend: voice", "redirect: { scheme: https }"), []string{"routes[0].redirect: only http routes redirect"}},
		{"redirect with a backend", strings.Replace(replace("kind: websocket", "kind: http"), "backend: voice", "backend: voice\n    redirect: { scheme: https }", 1), []string{"routes[0].redirect: a redirect is in place of backend and backends"}},
		{"redirect fields", strings.Replace(replace("kind: websocket", "kind: http"), "backend: voice", "redirect: { scheme: ftp, host: 'a.example.com:80', port: 70000, status_code: 304, path: /a, prefix: /b }", 1),
			[]string{`routes[0].redirect.scheme: "ftp" is not http or https`, `routes[0].redirect.host: "a.example.com:80" is not a lower-case host name`, "routes[0].redirect.port: 70000 is not a port",
				"routes[0].redirect.status_code: 304 is not", "routes[0].redirect: path and prefix are exclusive", "routes[0].redirect.prefix: needs a route with a prefix match"}},
		{"redirect with a rewrite", strings.Replace(replace("kind: websocket", "kind: http"), "backend: voice", "redirect: { path: '/n?x' }\n    rewrite: { path: /s }", 1),
			[]string{"routes[0].redirect: a redirect forwards nothing", `routes[0].redirect.path: "/n?x" is not a path`}},
		{"rewrite both", replace("backend: voice", "backend: voice\n    rewrite: { prefix: /a/, path: /b }"), []string{"routes[0].rewrite: prefix and path are exclusive"}},
		{"rewrite relative", replace("backend: voice", "backend: voice\n    rewrite: { path: stream }"), []string{`routes[0].rewrite.path: "stream" must start with '/'`}},
		{"rewrite with query", replace("backend: voice", "backend: voice\n    rewrite: { path: '/s?x=1' }"), []string{`routes[0].rewrite.path: "/s?x=1" is not a path`}},
		{"rewrite with backslash", replace("backend: voice", "backend: voice\n    rewrite: { prefix: '/\\\\1' }"), []string{`routes[0].rewrite.prefix: "/\\\\1" is not a path`}},
		{"rewrite in tcp mode", strings.Replace(tcpRoute, "backend: voice", "backend: voice\n    rewrite: { path: /s }", 1), []string{"routes[0].rewrite: a tcp route forwards bytes unchanged"}},
		{"headers on a websocket route", replace("backend: voice", "backend: voice\n    request_headers_to_add: [{ name: x-a, value: b }]"),
			[]string{"routes[0]: only http routes add or remove headers"}},
		{"header edits", strings.Replace(replace("kind: websocket", "kind: http"), "backend: voice", "backend: voice\n    request_headers_to_add: [{ name: host, value: x }, { name: x-a, value: \"a\\nb\" }, { name: x-a, value: c }]\n"+
			"    request_headers_to_remove: [authorization, x-envoy-original-path, Bad]\n    response_headers_to_remove: [content-length]", 1),
			[]string{
				`routes[0].request_headers_to_add[0].name: "host" is set by Envoy or frames the message`,
				"routes[0].request_headers_to_add[1].value: has a control character",
				`routes[0].request_headers_to_add[2].name: "x-a" is set twice`,
				`routes[0].request_headers_to_remove[0]: "authorization" is a token source of auth policy "demo"`,
				`routes[0].request_headers_to_remove[1]: "x-envoy-original-path" is set by Envoy`,
				`routes[0].request_headers_to_remove[2]: "Bad" is not a lower-case header name`,
				`routes[0].response_headers_to_remove[0]: "content-length" is set by Envoy or frames the message`,
			}},
		{"bad port", replace("127.0.0.1:10000", "127.0.0.1:99999"), []string{`listeners[0].address: "99999" is not a port`}},
		{"short key", replace("ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "c2hvcnQ"), []string{"auth_policies[0].jwt.keys[0]: key is 5 bytes; HS256 needs at least 32"}},
		{"unsupported alg", replace("alg: HS256", "alg: none"), []string{`jwt.keys[0]: alg "none" does not go with kty "oct"`}},
		{"empty source", replace("{ bearer: true }", "{}"), []string{"sources[0]: one of bearer, query, header and subprotocol_prefix"}},
		{"duplicate route", replace("routes:\n", "routes:\n  - { name: voice, match: { prefix: / }, kind: http, backend: voice }\n"), []string{`routes[1].name: "voice" is used twice`}},
		{"bad name", replace("name: voice\n    match", "name: Voice Route\n    match"), []string{"routes[0].name"}},
		{"no listeners", "routes: []", []string{"listeners: at least one listener"}},
		{"field twice", replace("kind: websocket", "kind: websocket\n    kind: http"), []string{"kind"}},
		{"reserved header", replace("sources:", "identity_header: authorization\n    sources:"), []string{`identity_header: "authorization" is reserved`}},
		{"listener tls without key", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    tls: { cert_file: /c.pem }"), []string{"listeners[0].tls: cert_file and key_file"}},
		{"bad host", replace("{ path: /v1/voice }", "{ path: /v1/voice, hosts: [Voice.Example.com] }"), []string{"routes[0].match.hosts[0]"}},
		{"header match two kinds", replace("{ path: /v1/voice }", "{ path: /v1/voice, headers: [{ name: x-a, exact: a, present: true }] }"), []string{"routes[0].match.headers[0]: exactly one of"}},
		{"header match bad name", replace("{ path: /v1/voice }", "{ path: /v1/voice, headers: [{ name: X_A, present: true }] }"), []string{"routes[0].match.headers[0].name"}},
		{"cors on websocket", replace("kind: websocket", "kind: websocket\n    cors: { allow_origins: [\"https://a.example\"] }"), []string{"routes[0].cors: only http routes"}},
		{"rate limit on websocket", replace("kind: websocket", "kind: websocket\n    rate_limit: { requests_per_unit: 1, unit: second }"), []string{"routes[0].rate_limit: only http routes"}},
		{"bad cors origin", replace("kind: websocket", "kind: http\n    cors: { allow_origins: [\"app.example.com\"] }"), []string{"routes[0].cors.allow_origins[0]"}},
		{"bad rate unit", replace("kind: websocket", "kind: http\n    rate_limit: { requests_per_unit: 1, unit: fortnight }"), []string{"routes[0].rate_limit.unit"}},
		{"zero rate", replace("kind: websocket", "kind: http\n    rate_limit: { unit: second }"), []string{"routes[0].rate_limit.requests_per_unit: must be positive"}},
		{"negative stream duration", replace("idle_timeout: 60s", "max_stream_duration: -1s"), []string{"routes[0].max_stream_duration: must be positive"}},
		{"tcp without address", replace("kind: websocket", "kind: websocket\n    mode: tcp"), []string{"routes[0].tcp.address: required"}},
		{"tcp with a match", tcpRoute, []string{"routes[0].match: a tcp route takes the whole listener"}},
		{"clients bad cidr", replace("kind: websocket", "kind: websocket\n    clients: { allow: [10.0.0.0/8, 10.0.0.1/8], deny: [nope] }"),
			[]string{"routes[0].clients.allow[1]: \"10.0.0.1/8\" has host bits set; the prefix is 10.0.0.0/8", "routes[0].clients.deny[0]: \"nope\" is not a CIDR"}},
		{"clients empty", replace("kind: websocket", "kind: websocket\n    clients: {}"), []string{"routes[0].clients: set allow, deny or both"}},
		{"clients on a raw tcp route", strings.Replace(strings.Replace(tcpRoute, "tcp: { address: 127.0.0.1:10001 }", "tcp: { address: 127.0.0.1:10001, raw: true }\n    clients: { deny: [10.0.0.0/8] }", 1), "auth: demo", "", 1),
			[]string{"routes[0].clients: a raw tcp route runs no handshake module"}},
		{"raw tcp with auth", strings.Replace(tcpRoute, "tcp: { address: 127.0.0.1:10001 }", "tcp: { address: 127.0.0.1:10001, raw: true }", 1), []string{"routes[0].tcp.raw: a route with auth is checked"}},
		{"tcp with dangling auth", strings.Replace(tcpRoute, "auth: demo", "auth: nope", 1), []string{`routes[0].auth: no auth policy named "nope"`}},
		{"tcp address taken", replace("kind: websocket", "kind: websocket\n    mode: tcp\n    tcp: { address: 127.0.0.1:10000 }"), []string{"routes[0].tcp.address: 127.0.0.1:10000 is already used by listeners[0].address"}},
		{"tcp on upgrade route", replace("kind: websocket", "kind: websocket\n    tcp: { address: 127.0.0.1:10001 }"), []string{"routes[0].tcp: only websocket routes in mode"}},
		{"bad lb", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    lb: random"), []string{`backends[0].lb: "random" is not`}},
		{"ring hash without header", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    lb: ring_hash"), []string{"backends[0].hash_header: required with lb"}},
		{"hash header without ring hash", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    hash_header: x-session"), []string{"backends[0].hash_header: only with lb"}},
		{"capacity without least_streams", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    max_streams: 10\n    slow_start: 1s"),
			[]string{`backends[0].max_streams: only with lb "least_streams"`, `backends[0].slow_start: only with lb "least_streams"`}},
		{"least_streams bounds", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    lb: least_streams\n    max_streams: 2000000\n    endpoint_max_streams: { \"127.0.0.1:9\": 5, \"127.0.0.1:8081\": 0 }\n    slow_start: 7200s\n    drain_path: \"/drain?now\""),
			[]string{"backends[0].max_streams: at most 1000000", `backends[0].endpoint_max_streams: "127.0.0.1:8081": want 1 to`, `backends[0].endpoint_max_streams: "127.0.0.1:9" is not one of the endpoints`,
				"backends[0].slow_start: want 0s (off) to 1h0m0s", `backends[0].drain_path: "/drain?now" is not a path`}},
		{"least_streams by DNS", replace("endpoints: [127.0.0.1:8081]", "endpoints: [voice.internal:8081]\n    lb: least_streams"), []string{`backends[0].lb: "least_streams" needs IP endpoints`}},
		{"health check path", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    health_check: { path: healthz }"), []string{"backends[0].health_check.path: must start with '/'"}},
		{"health check interval", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    health_check: { interval: 0s }"), []string{"backends[0].health_check.interval: must be positive"}},
		{"ejection percent", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    outlier_detection: { max_ejection_percent: 150 }"), []string{"backends[0].outlier_detection.max_ejection_percent: at most 100"}},
		{"rsa alg on hmac key", replace("alg: HS256", "alg: RS256"), []string{`alg "RS256" does not go with kty "oct"`}},
		{"small rsa key", replace("kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "kty: RSA, kid: r, alg: RS256, n: AQAB, e: AQAB"), []string{"RSA key is 17 bits"}},
		{"ec curve mismatch", replace("kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "kty: EC, kid: e, alg: ES256, crv: P-384, x: AA, y: AA"), []string{`crv "P-384" does not go with ES256`}},
		{"ec point off curve", replace("kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "kty: EC, kid: e, alg: ES256, crv: P-256, x: AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, y: AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"), []string{"not on P-256"}},
		{"okp short", replace("kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "kty: OKP, kid: o, alg: EdDSA, crv: Ed25519, x: AAAA"), []string{"x must be 32 bytes"}},
		{"jwks url plain http", replace("    jwt:\n", "    jwt:\n      jwks_url: 'http://keys.example.com/jwks.json'\n"), []string{"auth_policies[0].jwt.jwks_url", "http is allowed on loopback only"}},
		{"token cache over an hour", replace("    jwt:\n", "    jwt:\n      token_cache: 7200s\n"), []string{"jwt.token_cache: must be whole seconds from 0s (off) to 3600s"}},
		{"token cache in fractions of a second", replace("    jwt:\n", "    jwt:\n      token_cache: 1.5s\n"), []string{"jwt.token_cache: must be whole seconds"}},
		{"token lifetime of zero", replace("    jwt:\n", "    jwt:\n      max_token_lifetime: 0s\n"), []string{"jwt.max_token_lifetime: must be whole seconds from 1s to 31622400s"}},
		{"token lifetime over a year", replace("    jwt:\n", "    jwt:\n      max_token_lifetime: 40000000s\n"), []string{"jwt.max_token_lifetime: must be whole seconds from 1s"}},
		{"token lifetime in fractions of a second", replace("    jwt:\n", "    jwt:\n      max_token_lifetime: 1.5s\n"), []string{"jwt.max_token_lifetime: must be whole seconds"}},
		{"jwks url loopback http is fine, but keys must still be valid", replace("    jwt:\n", "    jwt:\n      jwks_url: 'http://127.0.0.1:9/jwks.json'\n      jwks_refresh: 0s\n"), []string{"jwt.jwks_refresh: must be positive"}},
		{"jwks file without audiences", replace("    jwt:\n", "    jwt:\n      jwks_file: /etc/dp/jwks.json\n"), []string{"auth_policies[0].jwt.audiences: required with jwks_file or jwks_url"}},
		{"jwks url without audiences", replace("    jwt:\n", "    jwt:\n      jwks_url: https://idp.example.com/jwks\n"), []string{"auth_policies[0].jwt.audiences: required with jwks_file or jwks_url"}},
		{"bad default rsa alg", replace("    jwt:\n", "    jwt:\n      default_rsa_alg: HS256\n"), []string{`auth_policies[0].jwt.default_rsa_alg: "HS256" is not one of RS256, RS384, RS512, PS256`}},
		{"short hmac", replace("k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "k: c2hvcnQtc2VjcmV0"), []string{"auth_policies[0].jwt.keys[0]: key is 12 bytes; HS256 needs at least 32"}},
		{"rsa key without alg or default", replace("kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi", "kty: RSA, kid: r, n: AQAB, e: AQAB"), []string{"an RSA key names no alg and no default RSA algorithm is set"}},
		{"bad origin", replace("sources:", "origins: { allow: [app.example.com] }\n    sources:"), []string{"auth_policies[0].origins.allow[0]"}},
		{"bad subprotocol prefix", replace("{ bearer: true }", "{ subprotocol_prefix: 'a b' }"), []string{"sources[0].subprotocol_prefix"}},
		{"upstream tls without ca", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    tls: { sni: voice.internal }"), []string{"backends[0].tls.ca_file: required"}},
		// Regression (issue 11): a route matching on a header the filter
		// strips was picked after the strip, its policy never run.
		{"match on a token header", replace("{ path: /v1/voice }", "{ path: /v1/voice, headers: [{ name: authorization, present: true }] }"), []string{`routes[0].match.headers[0].name: "authorization" is a token source of auth policy "demo"`}},
		{"match on a named token header", strings.Replace(replace("{ bearer: true }", "{ header: x-api-key }"), "routes:\n", "routes:\n  - { name: keyed, match: { prefix: /k/, headers: [{ name: x-api-key, present: true }] }, kind: http, backend: voice }\n", 1), []string{`"x-api-key" is a token source of auth policy "demo"`}},
		{"match on an identity header", strings.Replace(replace("sources:", "identity_header: x-directpipe-identity\n    sources:"), "routes:\n", "routes:\n  - { name: who, match: { prefix: /w/, headers: [{ name: x-directpipe-identity, exact: admin }] }, kind: http, backend: voice }\n", 1), []string{`"x-directpipe-identity" is the identity header of auth policy "demo"`}},
		{"too many trusted hops", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { trusted_proxy_hops: 17 }"), []string{"listeners[0].limits.trusted_proxy_hops: at most 16"}},
		{"negative count", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { trusted_proxy_hops: -1 }"), []string{"listeners[0].limits.trusted_proxy_hops: want a whole number from 0 to 4294967295, got \"-1\" (line 5)"}},
		{"fractional count", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { trusted_proxy_hops: 1.5 }"), []string{"listeners[0].limits.trusted_proxy_hops: want a whole number", `got "1.5"`}},
		{"count too large", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { trusted_proxy_hops: 4294967296 }"), []string{"listeners[0].limits.trusted_proxy_hops: want a whole number from 0 to 4294967295"}},
		{"zero head timeout", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { request_headers_timeout: 0s }"), []string{"listeners[0].limits.request_headers_timeout: must be positive"}},
		{"endless head timeout", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { request_headers_timeout: 3600s }"), []string{"listeners[0].limits.request_headers_timeout"}},
		{"no connection idle timeout", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { connection_idle_timeout: 0s }"), []string{"listeners[0].limits.connection_idle_timeout: want 1s to 1h0m0s"}},
		{"a connection idle timeout under a second", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { connection_idle_timeout: 0.5s }"), []string{"listeners[0].limits.connection_idle_timeout: want 1s to 1h0m0s"}},
		{"a day's connection idle timeout", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { connection_idle_timeout: 86400s }"), []string{"listeners[0].limits.connection_idle_timeout: want 1s to 1h0m0s"}},
		{"h2 window too small", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    http2: true\n    limits: { http2_initial_stream_window_size: 1024 }"), []string{"listeners[0].limits.http2_initial_stream_window_size: must be 65535"}},
		{"no h2 keepalive", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    http2: true\n    limits: { http2_keepalive_interval: 0s }"), []string{"listeners[0].limits.http2_keepalive_interval: want 1s to 1h0m0s"}},
		{"an h2 keepalive timeout of an hour", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    http2: true\n    limits: { http2_keepalive_timeout: 3600s }"), []string{"listeners[0].limits.http2_keepalive_timeout: want 1s to 5m0s"}},
		{"h2 keepalive without h2", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { http2_keepalive_interval: 5s }"), []string{"listeners[0].limits.http2_keepalive_interval: the listener does not accept HTTP/2"}},
		{"h2 limits without h2", replace("address: 127.0.0.1:10000", "address: 127.0.0.1:10000\n    limits: { http2_max_concurrent_streams: 10 }"), []string{"listeners[0].limits.http2_max_concurrent_streams: the listener does not accept HTTP/2"}},
		{"upstream tls without sni", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    tls: { ca_file: /ca.pem }"), []string{"backends[0].tls.sni: required"}},
		{"upstream tls without sni but with san", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    tls: { ca_file: /ca.pem, san: [voice.internal] }"), []string{"backends[0].tls.sni: required"}},
		{"cloud metadata endpoint", replace("[127.0.0.1:8081]", "[169.254.169.254:80]"), []string{"backends[0].endpoints[0]: 169.254.169.254 is link-local", "allow_internal", "(line 14)"}},
		{"mapped metadata endpoint", replace("[127.0.0.1:8081]", `["[::ffff:169.254.169.254]:80"]`), []string{"backends[0].endpoints[0]: 169.254.169.254 is link-local"}},
		{"ec2 v6 metadata endpoint", replace("[127.0.0.1:8081]", `["[fd00:ec2::254]:80"]`), []string{"fd00:ec2::254 is a cloud metadata address"}},
		{"link-local v6 endpoint", replace("[127.0.0.1:8081]", `["[fe80::1]:80"]`), []string{"fe80::1 is link-local"}},
		{"unspecified endpoint", replace("[127.0.0.1:8081]", "[0.0.0.0:8081]"), []string{"0.0.0.0 is unspecified"}},
		{"broadcast endpoint", replace("[127.0.0.1:8081]", "[255.255.255.255:8081]"), []string{"is the broadcast address"}},
		{"multicast endpoint", replace("[127.0.0.1:8081]", "[224.0.0.1:8081]"), []string{"224.0.0.1 is multicast"}},
		{"jwks url at the metadata service", replace("keys: [{ kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi }]", "jwks_url: https://169.254.169.254/keys\n      audiences: [a]"), []string{"jwt.jwks_url", "link-local"}},
		{"upstream tls bad san", replace("endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081]\n    tls: { sni: voice.internal, ca_file: /ca.pem, san: ['*.internal'] }"), []string{"backends[0].tls.san[0]"}},
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

// TestWarnings: keys from a JWKS file or URL without an issuer are allowed
// but warned about: any issuer whose keys share the set would do.
func TestWarnings(t *testing.T) {
	p, err := Parse([]byte(strings.Replace(validPolicy, "    jwt:\n", "    jwt:\n      jwks_url: https://idp.example.com/jwks\n      audiences: [voice]\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if w := Warnings(p); len(w) != 1 || !strings.Contains(w[0], "auth_policies[0].jwt.issuer: not set") {
		t.Errorf("Warnings = %q", w)
	}
	p.GetAuthPolicies()[0].GetJwt().Issuer = "https://idp.example.com"
	if w := Warnings(p); len(w) != 0 {
		t.Errorf("with an issuer: %q", w)
	}
}
