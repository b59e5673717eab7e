//go:build linux

package latencylab

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/envoy/testkit/jwtmint"
)

// envoyNode starts the node id of the stack's Envoy; the filter build ends it.
const envoyNode = "bench-envoy"

// stack is directpipe as `make run` starts it, on free ports.
type stack struct {
	t      testkit.T
	keys   signingKeys
	listen string
	raw    string // the tcp mode route's listener
	// rawAuth is the listener of a tcp mode route with auth: the tcp
	// handshake module in front of tcp_proxy.
	rawAuth string
	file    string
	body    string
	node    string // the Envoy's node id
	cp      *testkit.ControlPlane
	envoy   *testkit.Envoy
}

// startStack starts the stack with the given build of the HTTP handshake
// filter, verifying tokens signed by keys (new ones when nil), so that two
// stacks can be given the same tokens.
func startStack(t testkit.T, b *testkit.Backend, workers int, filter testkit.FilterBuild, keys *signingKeys) *stack {
	if keys == nil {
		k := newSigningKeys(t)
		keys = &k
	}
	s := &stack{
		t:      t,
		keys:   *keys,
		listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
		raw:    fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
	}
	s.rawAuth = fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s.body = s.smallPolicy(b.VoiceAddr, b.RESTAddr)
	s.file = filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(s.file, []byte(s.body), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cp = testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: s.file, AdminToken: adminToken, Filter: filter})
	s.node = envoyNode + "-" + string(filter)
	s.envoy = testkit.StartEnvoy(t, testkit.EnvoyOptions{NodeID: s.node, XDSAddr: s.cp.XDSAddr(), Concurrency: workers, Filter: filter})
	// The listener waits for the module's download and compilation: a
	// few seconds, many more when another Envoy compiles beside it (go
	// test runs packages in parallel). A bound, not a measurement.
	deadline := time.Now().Add(90 * time.Second)
	for {
		resp, err := http.Get(s.url("http", "/api/health"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the REST route never answered through Envoy")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return s
}

func (s *stack) url(scheme, path string) string { return scheme + "://" + s.listen + path }

// smallPolicy is the stack's own policy: a WebSocket route with auth and
// one without, a REST route, and tcp mode routes with and without auth,
// the voice routes to voice and the REST one to rest.
func (s *stack) smallPolicy(voice, rest string) string {
	return fmt.Sprintf(`listeners:
  - { name: public, address: "%s" }
routes:
  - { name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice, auth: demo }
  - { name: voice-public, match: { path: /v1/public }, kind: websocket, backend: voice }
  - { name: api, match: { prefix: /api/ }, kind: http, backend: rest }
  - { name: voice-raw, kind: websocket, mode: tcp, tcp: { address: "%s", raw: true }, backend: voice }
  - { name: voice-raw-auth, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: voice, auth: demo }
backends:
  - { name: voice, endpoints: ["%s"] }
  - { name: rest, endpoints: ["%s"] }
auth_policies:
  - name: demo
    sources: [{ bearer: true }, { query: access_token }]
    jwt:
      keys:
        - { kty: oct, kid: %s, alg: HS256, k: %s }
%s`, s.listen, s.raw, s.rawAuth, voice, rest, jwtmint.KeyID, jwtmint.Secret, s.keys.jwksYAML("        "))
}
