//go:build linux

package latencylab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/envoy/testkit/jwtmint"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

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
	cp      *testkit.ControlPlane
	envoy   *testkit.Envoy
}

func startStack(t testkit.T, b *testkit.Backend, workers int) *stack {
	s := &stack{
		t:      t,
		keys:   newSigningKeys(t),
		listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
		raw:    fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)),
	}
	s.rawAuth = fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s.body = fmt.Sprintf(`listeners:
  - { name: public, address: "%s" }
routes:
  - { name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice, auth: demo }
  - { name: api, match: { prefix: /api/ }, kind: http, backend: rest }
  - { name: voice-raw, kind: websocket, mode: tcp, tcp: { address: "%s" }, backend: voice }
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
%s`, s.listen, s.raw, s.rawAuth, b.VoiceAddr, b.RESTAddr, jwtmint.KeyID, jwtmint.Secret, s.keys.jwksYAML("        "))
	s.file = filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(s.file, []byte(s.body), 0o644); err != nil {
		t.Fatal(err)
	}
	s.cp = testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: s.file})
	s.envoy = testkit.StartEnvoy(t, testkit.EnvoyOptions{XDSAddr: s.cp.XDSAddr(), Concurrency: workers})
	deadline := time.Now().Add(20 * time.Second)
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

// changeToACK times, n times, from writing a policy file with one more
// route to Envoy's ACK of the new routes and filter config.
func (s *stack) changeToACK(n int) voiceprobe.Summary {
	var samples []time.Duration
	for i := range n {
		body := strings.Replace(s.body, "routes:\n", fmt.Sprintf("routes:\n  - { name: ack-%d, match: { prefix: /ack-%d/ }, kind: http, backend: rest }\n", i, i), 1)
		p, err := policy.Parse([]byte(body))
		if err != nil {
			s.t.Fatal(err)
		}
		want := policy.Revision(p)
		start := time.Now()
		tmp := s.file + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			s.t.Fatal(err)
		}
		if err := os.Rename(tmp, s.file); err != nil {
			s.t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for ctx.Err() == nil && !s.acked(want) {
			time.Sleep(time.Millisecond)
		}
		cancel()
		samples = append(samples, time.Since(start))
	}
	return voiceprobe.Summarize(samples)
}

// acked reports whether revision rev is served and every Envoy ACKed all of it.
func (s *stack) acked(rev string) bool {
	if _, cur := s.cp.Policy(); cur != rev {
		return false
	}
	latest := s.cp.XDS().Versions()
	for _, n := range s.cp.XDS().Status().Nodes() {
		for typ, v := range latest {
			if n.Types[typ].Acked != v {
				return false
			}
		}
	}
	return true
}
