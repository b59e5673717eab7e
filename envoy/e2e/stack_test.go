// Package e2e runs directpipe end to end: the control plane in process, a
// real Envoy and the example back end as processes, all on loopback.
package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/envoy/testkit/jwtmint"
	"github.com/directpipe/directpipe/filter/contract"
)

// devSecret is the example policy's development key.
var devSecret = jwtmint.DevSecret()

const demoAPIKey = "dp_demo_key_for_local_testing_only"

// adminToken guards the admin API of every test's control plane.
const adminToken = "e2e-admin-token"

// policyTemplate is the example policy with the test's ports, plus room
// for extra routes.
const policyTemplate = `
listeners:
  - { name: public, address: "{{ .Listen }}", http2: true{{ if .ListenerLimits }}, limits: {{ .ListenerLimits }}{{ end }} }
routes:
  - name: voice
    match: { path: /v1/voice }
    kind: websocket
    backend: voice
    auth: demo
    idle_timeout: 300s
  - { name: api, match: { prefix: /api/ }, kind: http, backend: rest }
  - { name: strict, match: { path: /v1/strict }, kind: websocket, backend: voice, auth: strict }
{{- if .TCP }}
  - { name: voice-raw, kind: websocket, mode: tcp, tcp: { address: "{{ .TCP }}" }, backend: voice, auth: demo }
{{- end }}
{{- range .ExtraRoutes }}
  - { name: {{ .Name }}, match: { prefix: "{{ .Prefix }}" }, kind: http, backend: rest{{ if .Auth }}, auth: {{ .Auth }}{{ end }} }
{{- end }}
{{ .RoutesYAML }}
backends:
  - name: voice
    endpoints: [{{ range $i, $e := .VoiceEndpoints }}{{ if $i }}, {{ end }}"{{ $e }}"{{ end }}]
  - { name: rest, endpoints: ["{{ .REST }}"] }
{{ .BackendsYAML }}
auth_policies:
  - name: demo
    sources: [{ bearer: true }, { query: access_token }, { subprotocol_prefix: dp.bearer. }]
    origins: { allow: ["http://{{ .Voice }}"], allow_missing: true }
    jwt:
      keys:
        {{- range .Keys }}
        - { kty: oct, kid: {{ .Kid }}, alg: HS256, k: {{ .K }} }
        {{- end }}
    api_keys:
      - { sha256: 3590041a46a99e65ed5b929371a6e9ab008257f81558a53a7a9250a9ecf87e75, identity: demo-client }
    identity_header: x-directpipe-identity
    claim_headers: { sub: x-directpipe-sub }
  - name: strict
    sources: [{ header: x-voice-token }]
    jwt:
      keys: [{ kty: oct, kid: dev, alg: HS256, k: ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi }]
      issuer: https://idp.example.com
      audiences: [voice]
      required_scopes: ["voice:stream"]
      {{- if .JWKSURL }}
      jwks_url: "{{ .JWKSURL }}"
      jwks_refresh: 1s
      {{- end }}
{{ .AuthPoliciesYAML }}
`

// route is an extra REST route; Auth names its auth policy, if any.
type route struct{ Name, Prefix, Auth string }
type jwk struct{ Kid, K string }

type policyParams struct {
	Listen         string
	Voice          string // the back end's voice address, also the demo page's origin
	REST           string
	VoiceEndpoints []string
	ExtraRoutes    []route
	Keys           []jwk
	// TCP, when set, adds a tcp mode route with auth on this address.
	TCP string
	// ListenerLimits, RoutesYAML and BackendsYAML add YAML to the
	// listener's limits, the routes and the back ends.
	// AuthPoliciesYAML adds auth policies.
	ListenerLimits, RoutesYAML, BackendsYAML, AuthPoliciesYAML string
	// JWKSURL, when set, adds a key set URL to the strict auth policy,
	// refreshed every second.
	JWKSURL string
}

func devKey() jwk { return jwk{Kid: "dev", K: base64.RawURLEncoding.EncodeToString(devSecret)} }

// stack is one running directpipe.
type stack struct {
	t       testing.TB
	cp      *testkit.ControlPlane
	envoy   *testkit.Envoy
	backend *testkit.Backend
	params  policyParams
	file    string
}

func (s *stack) listenURL(scheme, path string) string {
	return scheme + "://" + s.params.Listen + path
}

// newStack starts back end, control plane and Envoy (SotW or delta) and
// waits until the REST route answers through Envoy. Options edit the
// policy before it is first written.
func newStack(t testing.TB, delta bool, opts ...func(*policyParams)) *stack {
	t.Helper()
	return newStackWith(t, stackOptions{delta: delta}, opts...)
}

// stackOptions are what newStackWith may change of newStack's stack.
type stackOptions struct {
	delta bool
	// wasm is the handshake module the control plane serves
	// (testkit.WasmModule when empty).
	wasm string
	// metrics serves the control plane's /metrics.
	metrics bool
	// log receives the control plane's log.
	log io.Writer
	// filter is the build of the HTTP handshake filter (wasm when empty);
	// native, when set, is the dynamic module the control plane serves
	// (testkit.NativeModule when empty).
	filter testkit.FilterBuild
	native string
	// fleet serves the modules by sha256 from the control plane's module
	// server, as to remote Envoys, rather than by file name.
	fleet bool
	// readyAddr serves Envoy's readiness listener there.
	readyAddr string
}

// newStackWith is newStack with options.
func newStackWith(t testing.TB, so stackOptions, opts ...func(*policyParams)) *stack {
	t.Helper()
	delta := so.delta
	s := &stack{t: t, backend: testkit.StartBackend(t)}
	s.params = policyParams{
		Listen:         fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
		Voice:          s.backend.VoiceAddr,
		REST:           s.backend.RESTAddr,
		VoiceEndpoints: []string{s.backend.VoiceAddr},
		Keys:           []jwk{devKey()},
	}
	for _, o := range opts {
		o(&s.params)
	}
	s.file = filepath.Join(t.TempDir(), "policy.yaml")
	s.writePolicy()
	cpo := testkit.ControlPlaneOptions{
		PolicyFile: s.file, AdminToken: adminToken, WasmPath: so.wasm, Metrics: so.metrics, Log: so.log,
		Filter: so.filter, NativePath: so.native,
	}
	if so.fleet {
		cpo.Fleet = &testkit.Fleet{}
	}
	s.cp = testkit.StartControlPlane(t, cpo)
	eo := testkit.EnvoyOptions{XDSAddr: s.cp.XDSAddr(), Delta: delta, Filter: so.filter, ReadyAddr: so.readyAddr}
	if so.fleet {
		eo.ModulesAddrs = []string{s.cp.ModulesAddr()}
	}
	s.envoy = testkit.StartEnvoy(t, eo)
	s.waitHTTP("/api/health", http.StatusOK, 20*time.Second)
	return s
}

func renderPolicy(t testing.TB, p policyParams, w io.Writer) {
	t.Helper()
	if err := template.Must(template.New("p").Parse(policyTemplate)).Execute(w, p); err != nil {
		t.Fatal(err)
	}
}

func (s *stack) writePolicy() {
	s.t.Helper()
	var buf bytes.Buffer
	renderPolicy(s.t, s.params, &buf)
	// Write then rename, as an editor or config-map would: the watcher must
	// never read a half-written file.
	tmp := s.file + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Rename(tmp, s.file); err != nil {
		s.t.Fatal(err)
	}
}

// waitHTTP polls a GET through Envoy until it answers with status.
func (s *stack) waitHTTP(path string, status int, timeout time.Duration) time.Duration {
	s.t.Helper()
	start := time.Now()
	client := &http.Client{Timeout: 2 * time.Second}
	var last string
	for time.Since(start) < timeout {
		resp, err := client.Get(s.listenURL("http", path))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == status {
				return time.Since(start)
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.t.Fatalf("GET %s did not answer %d within %v (last: %s)", path, status, timeout, last)
	return 0
}

// handshakes returns what the back end received on recent upgrades.
func (s *stack) handshakes() []backendHandshake {
	s.t.Helper()
	return backendHandshakes(s.t, s.backend.VoiceAddr)
}

// backendHandshake is one upgrade request as the back end received it.
type backendHandshake struct {
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
}

// backendHandshakes asks a voice back end what it received on recent
// upgrades.
func backendHandshakes(t testing.TB, voiceAddr string) []backendHandshake {
	t.Helper()
	resp, err := http.Get("http://" + voiceAddr + "/debug/handshakes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []backendHandshake
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mint(t testing.TB, key []byte, kid string, claims jwt.MapClaims) string {
	t.Helper()
	return mintWith(t, jwt.SigningMethodHS256, key, kid, claims)
}

func mintWith(t testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwtmint.Sign(method, key, kid, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func validToken(t testing.TB) string {
	now := time.Now()
	return mint(t, devSecret, "dev", jwt.MapClaims{"sub": "caller-1", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix()})
}

// upgrade sends a raw WebSocket upgrade request and returns the response.
func upgrade(t testing.TB, url string, header http.Header) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, ""
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, strings.TrimSpace(string(body))
}

func b64url[T string | []byte](b T) string { return base64.RawURLEncoding.EncodeToString([]byte(b)) }

// fileRevision is the revision of the policy file as it is now.
func fileRevision(s *stack) string {
	p, err := policy.LoadFile(s.file)
	if err != nil {
		return ""
	}
	return policy.Revision(p)
}

// eventually retries check for up to a few seconds and reports its last
// answer if it never holds. Envoy ACKs a filter config when its main
// thread accepts it; its workers get it a moment later.
// eventuallyInARow is eventually for a change that reaches Envoy's workers
// one by one after Envoy ACKs it: check must hold n times in a row, as
// fresh connections spread over the workers.
func eventuallyInARow(t testing.TB, n int, check func() (bool, string)) {
	t.Helper()
	streak := 0
	eventually(t, func() (bool, string) {
		ok, why := check()
		if streak++; !ok {
			streak = 0
		}
		return streak >= n, why
	})
}

func eventually(t testing.TB, check func() (bool, string)) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, last = check(); ok {
			return
		}
	}
	t.Error(last)
}

// httpFilterStat is the name under which Envoy shows a counter of the
// given build of the HTTP handshake filter.
func httpFilterStat(build testkit.FilterBuild, name string) string {
	if build == testkit.FilterNative {
		return "dynamicmodulescustom." + name
	}
	return "wasmcustom." + name
}

// checkTCPFilterBuild asserts that the tcp mode handshakes this stack's
// Envoy decided were decided by the given build's network filter: its
// allowed and denied counters moved, the other build's stayed at zero or
// do not exist, and only the Wasm build sent denials through the deny
// listener (the native filter answers them on the connection itself).
func (s *stack) checkTCPFilterBuild(build testkit.FilterBuild, denied string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other := testkit.FilterNative
	if build == testkit.FilterNative {
		other = testkit.FilterWasm
	}
	for _, name := range []string{contract.MetricTCPAllowed, contract.MetricTCPDeniedPrefix + denied} {
		if err := s.envoy.WaitStat(ctx, httpFilterStat(build, name), func(v int64) bool { return v > 0 }); err != nil {
			s.t.Fatalf("the %s network filter did not count %s: %v", build, name, err)
		}
		if v, err := s.envoy.Stat(ctx, httpFilterStat(other, name)); err == nil && v > 0 {
			s.t.Fatalf("%s = %d: the other build's network filter decided handshakes", httpFilterStat(other, name), v)
		}
	}
	v, err := s.envoy.Stat(ctx, "http.directpipe_deny.downstream_rq_completed")
	switch {
	case err != nil:
		s.t.Fatal(err)
	case build == testkit.FilterNative && v > 0:
		s.t.Fatalf("the deny listener answered %d requests: the native filter should answer denials itself", v)
	case build == testkit.FilterWasm && v == 0:
		s.t.Fatal("the deny listener answered nothing: the Wasm filter's denials go through it")
	}
}

// checkFilterBuild asserts that the HTTP handshakes this stack's Envoy
// decided were decided by the given build of the filter: its counters
// moved, and the other build's did not exist or stayed at zero.
func (s *stack) checkFilterBuild(build testkit.FilterBuild) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	other := testkit.FilterNative
	if build == testkit.FilterNative {
		other = testkit.FilterWasm
	}
	if err := s.envoy.WaitStat(ctx, httpFilterStat(build, contract.MetricAllowed), func(v int64) bool { return v > 0 }); err != nil {
		s.t.Fatalf("the %s filter allowed no handshake: %v", build, err)
	}
	if v, err := s.envoy.Stat(ctx, httpFilterStat(other, contract.MetricAllowed)); err == nil && v > 0 {
		s.t.Fatalf("%s = %d: the other build of the filter decided handshakes", httpFilterStat(other, contract.MetricAllowed), v)
	}
}
