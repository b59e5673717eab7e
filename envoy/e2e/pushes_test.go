package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// routeAppliedWithin is the bound from a policy file change to a new
// route answering. It is a functional deadline (the file watch promises "within
// a second"), not a performance measurement: `make bench` reports the real
// time.
const routeAppliedWithin = time.Second

// TestConfigPushesNeverCutLiveCalls keeps 100 voice streams sending real-time
// frames while the policy changes 50 times — routes added and removed, a voice
// endpoint added and removed, an auth key rotated — and proves every stream
// stayed open with no frame lost or reordered, and that no listener changed;
// with SotW and delta xDS, and with the native build of the filter, whose
// key rotations are new filter configs for the same library.
func TestConfigPushesNeverCutLiveCalls(t *testing.T) {
	for _, flavour := range []struct {
		name   string
		delta  bool
		filter testkit.FilterBuild
	}{{"sotw", false, testkit.FilterWasm}, {"delta", true, testkit.FilterWasm}, {"native", false, testkit.FilterNative}} {
		t.Run(flavour.name, func(t *testing.T) {
			s := newStackWith(t, stackOptions{delta: flavour.delta, filter: flavour.filter})
			second := testkit.StartBackend(t)
			ctx := context.Background()
			modifiedBefore, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
			if err != nil {
				t.Fatal(err)
			}

			stop := make(chan struct{})
			results := make(chan *voiceprobe.Result, 1)
			go func() {
				res, err := voiceprobe.Run(ctx, voiceprobe.Config{
					URL:     s.listenURL("ws", "/v1/voice"),
					Header:  http.Header{"Authorization": {"Bearer " + validToken(t)}},
					Streams: 100, Frames: 3000, Interval: 20 * time.Millisecond,
					Stop: stop, Drain: 10 * time.Second,
				})
				if err != nil {
					t.Error(err)
				}
				results <- res
			}()
			waitStreams(t, s, 100)

			var slowest time.Duration
			for i := range 50 {
				switch i % 5 {
				case 0, 1: // add a route
					name := fmt.Sprintf("extra-%d", i)
					s.params.ExtraRoutes = append(s.params.ExtraRoutes, route{Name: name, Prefix: "/routes/" + name})
					s.writePolicy()
					slowest = max(slowest, s.waitHTTP("/routes/"+name, http.StatusOK, 10*time.Second))
				case 2: // remove the oldest extra route
					gone := s.params.ExtraRoutes[0]
					s.params.ExtraRoutes = s.params.ExtraRoutes[1:]
					s.writePolicy()
					s.waitHTTP("/routes/"+gone.Name, http.StatusNotFound, 10*time.Second)
				case 3: // add or remove a voice endpoint
					if len(s.params.VoiceEndpoints) == 1 {
						s.params.VoiceEndpoints = append(s.params.VoiceEndpoints, second.VoiceAddr)
					} else {
						s.params.VoiceEndpoints = s.params.VoiceEndpoints[:1]
					}
					s.writePolicy()
					waitVersionMoved(t, s)
				case 4: // rotate a second key in or out
					if len(s.params.Keys) == 1 {
						s.params.Keys = append(s.params.Keys, jwk{Kid: fmt.Sprintf("k%d", i), K: "c2Vjb25kLWtleS1mb3Itcm90YXRpb24tdGVzdHMtMzJi"})
					} else {
						s.params.Keys = s.params.Keys[:1]
					}
					s.writePolicy()
					waitVersionMoved(t, s)
				}
			}
			close(stop)
			res := <-results
			if res == nil {
				t.Fatal("the probe did not run")
			}
			t.Logf("%d streams, %d frames sent, %d received; slowest new route answered after %v; rtt p50 %v p99 %v",
				len(res.Streams), res.Sent, res.Received, slowest, res.RTT.P50, res.RTT.P99)
			if res.FailedDials != 0 || res.Disconnects != 0 || res.Lost != 0 || res.Reordered != 0 || res.Corrupted != 0 {
				for i, st := range res.Streams {
					if st.Error != "" {
						t.Logf("stream %d: %s", i, st.Error)
					}
				}
				t.Fatalf("live calls were hurt: failed dials %d disconnects %d lost %d reordered %d corrupted %d",
					res.FailedDials, res.Disconnects, res.Lost, res.Reordered, res.Corrupted)
			}
			if slowest > routeAppliedWithin {
				t.Errorf("a new route took %v to answer, more than %v", slowest, routeAppliedWithin)
			}
			modifiedAfter, err := s.envoy.Stat(ctx, "listener_manager.listener_modified")
			if err != nil {
				t.Fatal(err)
			}
			if modifiedAfter != modifiedBefore {
				t.Errorf("listener_manager.listener_modified moved from %d to %d: a push touched a listener", modifiedBefore, modifiedAfter)
			}
			s.checkFilterBuild(flavour.filter)
		})
	}
}

// waitStreams waits until the back end has accepted n upgrades.
func waitStreams(t *testing.T, s *stack, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.envoy.WaitStat(ctx, "http.public.downstream_cx_upgrades_active", func(v int64) bool { return v >= n }); err != nil {
		t.Fatal(err)
	}
}

// waitVersionMoved waits until the control plane served the file's new
// content and every Envoy ACKed it.
func waitVersionMoved(t *testing.T, s *stack) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if synced(s) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("Envoy did not ACK the change")
}

// synced reports whether the served policy is the file's and every node
// ACKed every type's latest version.
func synced(s *stack) bool {
	latest := s.cp.XDS().Versions()
	nodes := s.cp.XDS().Status().Nodes()
	if len(nodes) == 0 {
		return false
	}
	for _, n := range nodes {
		for typ, v := range latest {
			if n.Types[typ].Acked != v {
				return false
			}
		}
	}
	return fileApplied(s)
}

// fileApplied reports whether the policy file's content is what is served.
func fileApplied(s *stack) bool {
	p, rev := s.cp.Policy()
	return p != nil && rev == fileRevision(s)
}

// TestKeyRotationKeepsOpenStreams rotates the signing key by ECDS: new
// handshakes need the new key, and a stream opened with the old key keeps
// flowing. It runs once per build of the HTTP handshake filter.
func TestKeyRotationKeepsOpenStreams(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { testKeyRotationKeepsOpenStreams(t, build) })
	}
}

func testKeyRotationKeepsOpenStreams(t *testing.T, build testkit.FilterBuild) {
	s := newStackWith(t, stackOptions{filter: build})
	ctx := context.Background()
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	oldToken := validToken(t)
	go func() {
		res, _ := voiceprobe.Run(ctx, voiceprobe.Config{
			URL: s.listenURL("ws", "/v1/voice"), Header: http.Header{"Authorization": {"Bearer " + oldToken}},
			Streams: 3, Frames: 5000, Interval: 20 * time.Millisecond, Stop: stop,
		})
		results <- res
	}()
	waitStreams(t, s, 3)

	newSecret := []byte("the-rotated-signing-key-32-bytes!")
	s.params.Keys = []jwk{{Kid: "rotated", K: b64url(newSecret)}}
	s.writePolicy()
	waitVersionMoved(t, s)

	now := time.Now()
	newToken := mint(t, newSecret, "rotated", jwt.MapClaims{"sub": "caller-2", "exp": now.Add(time.Hour).Unix()})
	eventually(t, func() (bool, string) {
		resp, body := upgrade(t, s.listenURL("http", "/v1/voice"), http.Header{"Authorization": {"Bearer " + newToken}})
		return resp.StatusCode == http.StatusSwitchingProtocols, fmt.Sprintf("new key: %d %s", resp.StatusCode, body)
	})
	if resp, _ := upgrade(t, s.listenURL("http", "/v1/voice"), http.Header{"Authorization": {"Bearer " + oldToken}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("old key after rotation: %d, want 401", resp.StatusCode)
	}
	time.Sleep(200 * time.Millisecond) // let the open streams carry frames after the rotation
	close(stop)
	res := <-results
	if res.Disconnects != 0 || res.Lost != 0 || res.Reordered != 0 || res.FailedDials != 0 {
		t.Fatalf("open streams were hurt by the rotation: %+v", res.Streams)
	}
	s.checkFilterBuild(build)
}

// TestInvalidPolicyKeepsServing writes a broken file, then one with a
// dangling reference: traffic keeps flowing on the last good config, and a
// later good file still applies.
func TestInvalidPolicyKeepsServing(t *testing.T) {
	s := newStack(t, false)
	_, before := s.cp.Policy()
	for _, bad := range []string{"routes: [ {name: broken", "listeners: []\nroutes: [{name: x, kind: http, backend: nowhere, match: {prefix: /}}]\n"} {
		if err := os.WriteFile(s.file, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(400 * time.Millisecond) // several watch debounces
		if _, now := s.cp.Policy(); now != before {
			t.Fatalf("an invalid file changed the served policy")
		}
		s.waitHTTP("/api/health", http.StatusOK, 2*time.Second)
		res, err := voiceprobe.Run(context.Background(), voiceprobe.Config{
			URL: s.listenURL("ws", "/v1/voice"), Header: http.Header{"Authorization": {"Bearer " + validToken(t)}},
			Streams: 2, Frames: 50,
		})
		if err != nil || res.Received != 100 {
			t.Fatalf("voice stopped working on an invalid file: %v %+v", err, res)
		}
	}
	s.params.ExtraRoutes = []route{{Name: "after-recovery", Prefix: "/routes/after-recovery"}}
	s.writePolicy()
	s.waitHTTP("/routes/after-recovery", http.StatusOK, 5*time.Second)
}

// TestRouteWithANewPolicyNeverRefusedWhilePropagating: a route added with
// an auth policy that is new too goes from Envoy's 404 straight to 200 for
// a caller with the new policy's key, never through the fail-closed 403 of
// a route whose policy the filter does not have yet: the filter config
// with the new policy is pushed before the route (make before break), to
// either build of the filter.
func TestRouteWithANewPolicyNeverRefusedWhilePropagating(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { routeWithANewPolicy(t, build) })
	}
}

func routeWithANewPolicy(t *testing.T, build testkit.FilterBuild) {
	s := newStackWith(t, stackOptions{filter: build})
	client := &http.Client{Timeout: 2 * time.Second}
	for i := range 5 {
		name := fmt.Sprintf("partner-%d", i)
		key := "partner-key-" + name
		sum := sha256.Sum256([]byte(key))
		s.params.ExtraRoutes = append(s.params.ExtraRoutes, route{Name: name, Prefix: "/routes/" + name, Auth: name})
		s.params.AuthPoliciesYAML += fmt.Sprintf("  - { name: %s, sources: [{ header: x-partner-key }], api_keys: [{ sha256: %x, identity: %s }] }\n", name, sum, name)
		s.writePolicy()
		notFoundThenOK(t, client, name, func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, s.listenURL("http", "/routes/"+name), nil)
			req.Header.Set("X-Partner-Key", key)
			return req
		})
		req, _ := http.NewRequest(http.MethodGet, s.listenURL("http", "/routes/"+name), nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("route %s without its key: %d, want 401", name, resp.StatusCode)
		}
	}
	s.checkFilterBuild(build)
}

// TestNewRouteNeverRefusedWhilePropagating hammers a route's path while it
// is added: it must go from Envoy's 404 straight to 200, never through the
// filter's fail-closed 403 (routes reaching Envoy before their auth
// setting), with either build of the filter.
func TestNewRouteNeverRefusedWhilePropagating(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { newRouteNeverRefused(t, build) })
	}
}

func newRouteNeverRefused(t *testing.T, build testkit.FilterBuild) {
	s := newStackWith(t, stackOptions{filter: build})
	client := &http.Client{Timeout: 2 * time.Second}
	for i := range 5 {
		name := fmt.Sprintf("fresh-%d", i)
		s.params.ExtraRoutes = append(s.params.ExtraRoutes, route{Name: name, Prefix: "/routes/" + name})
		s.writePolicy()
		notFoundThenOK(t, client, name, func() *http.Request {
			req, _ := http.NewRequest(http.MethodGet, s.listenURL("http", "/routes/"+name), nil)
			return req
		})
	}
}

// notFoundThenOK sends the request again and again while route name
// propagates: Envoy's 404 until it arrives, then 200, and nothing else.
func notFoundThenOK(t *testing.T, client *http.Client, name string, newRequest func() *http.Request) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := client.Do(newRequest())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("route %s answered %d while propagating", name, resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("route %s never answered", name)
		}
	}
}
