package kube

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

func testObjects() Objects {
	return Objects{
		Routes: []VoiceRoute{
			{ObjectMeta: metav1.ObjectMeta{Name: "voice"}, Spec: VoiceRouteSpec{
				Match: &RouteMatch{Path: "/v1/voice"}, Kind: "websocket", BackendRef: LocalRef{Name: "agents"},
				HandshakePolicyRef: &LocalRef{Name: "callers"}, IdleTimeout: &metav1.Duration{Duration: time.Minute},
			}},
			{ObjectMeta: metav1.ObjectMeta{Name: "api"}, Spec: VoiceRouteSpec{
				Match: &RouteMatch{Prefix: "/api/"}, Kind: "http", BackendRef: LocalRef{Name: "rest"},
			}},
		},
		Backends: []VoiceBackend{
			{ObjectMeta: metav1.ObjectMeta{Name: "rest"}, Spec: VoiceBackendSpec{Endpoints: []string{"127.0.0.1:8082"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "agents", Namespace: "voice"}, Spec: VoiceBackendSpec{
				Service: &ServiceRef{Name: "agents", Port: 80},
				LB:      "least_streams", MaxStreams: 200, SlowStart: &metav1.Duration{Duration: 5 * time.Second}, DrainPath: "/drain",
			}},
		},
		Policies: []HandshakePolicy{
			{ObjectMeta: metav1.ObjectMeta{Name: "callers"}, Spec: HandshakePolicySpec{
				Sources: []TokenSource{{Bearer: true}},
				APIKeys: []APIKey{{SHA256: strings.Repeat("ab", 32), Identity: "tester"}},
			}},
		},
	}
}

func TestBuildIsValidAndDeterministic(t *testing.T) {
	listeners := []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}}
	var asked ServiceRef
	eps := func(ref ServiceRef) Endpoints {
		asked = ref
		return Endpoints{Ready: []string{"10.0.0.1:8080"}, Draining: []string{"10.0.0.2:8080"}}
	}
	b := Build(listeners, testObjects(), eps)
	if err := policy.Validate(b.Policy); err != nil {
		t.Fatalf("built policy does not validate: %v", err)
	}
	if asked.Namespace != "voice" {
		t.Errorf("service namespace defaults to the back end's: asked %+v", asked)
	}
	agents := b.Policy.GetBackends()[0]
	if agents.GetName() != "agents" || len(agents.GetEndpoints()) != 2 || agents.GetDrainingEndpoints()[0] != "10.0.0.2:8080" || !agents.GetDiscovered() {
		t.Errorf("service back end: %v", agents)
	}
	if agents.GetLb() != "least_streams" || agents.GetMaxStreams() != 200 || agents.GetSlowStart().AsDuration() != 5*time.Second || agents.GetDrainPath() != "/drain" {
		t.Errorf("least_streams settings not carried: %v", agents)
	}
	// The watch delivers in any order; the revision must not move.
	o := testObjects()
	o.Routes[0], o.Routes[1] = o.Routes[1], o.Routes[0]
	o.Backends[0], o.Backends[1] = o.Backends[1], o.Backends[0]
	if a, b := policy.Revision(b.Policy), policy.Revision(Build(listeners, o, eps).Policy); a != b {
		t.Errorf("same objects in another order: revision %s, then %s", a, b)
	}
}

func TestProblemsGoToTheirObject(t *testing.T) {
	o := testObjects()
	o.Routes[1].Spec.BackendRef.Name = "missing"
	b := Build([]*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}}, o, func(ServiceRef) Endpoints { return Endpoints{Ready: []string{"10.0.0.1:80"}} })
	err := policy.Validate(b.Policy)
	if err == nil {
		t.Fatal("a route naming a missing back end validated")
	}
	got := b.Problems(errors.Join(errors.New("invalid policy: " + err.Error())))
	if msgs := got[Key("VoiceRoute", "api")]; len(msgs) != 1 || !strings.Contains(msgs[0], `no backend named "missing"`) {
		t.Errorf("route api's problems: %q (all: %v)", msgs, got)
	}
	if msgs := got[Key("VoiceRoute", "voice")]; len(msgs) != 0 {
		t.Errorf("route voice blamed: %q", msgs)
	}
}

func TestSecretKeys(t *testing.T) {
	secrets := map[string]map[string][]byte{
		"keys":  {"b-agent": []byte("key-b\n"), "a-agent": []byte("key-a")},
		"empty": {"a-agent": []byte(" \n")},
	}
	lookup := func(name string) (map[string][]byte, bool) { s, ok := secrets[name]; return s, ok }
	cases := []struct {
		name, secret, wantErr string
		wantIDs               []string
	}{
		{"identities in order, keys trimmed", "keys", "", []string{"a-agent", "b-agent"}},
		{"missing", "nowhere", `no Secret named "nowhere"`, nil},
		{"empty entry", "empty", `entry "a-agent" is empty`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keys, err := secretKeys(c.secret, lookup)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, k := range keys {
				ids = append(ids, k.GetIdentity())
			}
			if strings.Join(ids, ",") != strings.Join(c.wantIDs, ",") {
				t.Errorf("identities %v, want %v", ids, c.wantIDs)
			}
			if keys[1].GetSha256() != sha256Hex("key-b") {
				t.Errorf("key-b hashed to %s", keys[1].GetSha256())
			}
		})
	}
	t.Run("too many entries", func(t *testing.T) {
		big := map[string][]byte{}
		for i := range MaxSecretKeys + 1 {
			big[fmt.Sprint(i)] = []byte("k")
		}
		if _, err := secretKeys("big", func(string) (map[string][]byte, bool) { return big, true }); err == nil || !strings.Contains(err.Error(), "more than the") {
			t.Errorf("err %v", err)
		}
	})
}
