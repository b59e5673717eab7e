package kube

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// apiServer is the envtest API server (etcd and kube-apiserver as local
// processes from KUBEBUILDER_ASSETS) every test of the package shares.
var apiServer *rest.Config

func TestMain(m *testing.M) {
	os.Exit(runWithAPIServer(m))
}

func runWithAPIServer(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		// Never skip: a missing tool is a failure CI must see.
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run make k8s-tools and export KUBEBUILDER_ASSETS=$PWD/.tools/k8s")
		return 1
	}
	gatewayCRDs, err := testkit.GatewayAPICRDs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	env := &envtest.Environment{CRDDirectoryPaths: append([]string{crdDir}, gatewayCRDs...), ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	apiServer = cfg
	return m.Run()
}

var nsCount struct {
	sync.Mutex
	n int
}

// testEnv is one test's namespace and a client for it.
type testEnv struct {
	t  *testing.T
	ns string
	c  client.Client
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	scheme, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(apiServer, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	nsCount.Lock()
	nsCount.n++
	ns := fmt.Sprintf("t%d-%s", nsCount.n, strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")))
	nsCount.Unlock()
	if len(ns) > 63 {
		ns = ns[:63]
	}
	if err := c.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	return &testEnv{t: t, ns: ns, c: c}
}

func (e *testEnv) create(obj client.Object) {
	e.t.Helper()
	obj.SetNamespace(e.ns)
	if err := e.c.Create(context.Background(), obj); err != nil {
		e.t.Fatalf("create %s: %v", obj.GetName(), err)
	}
}

// eventually polls cond until it holds; the bound is only there to end a
// broken test, not a speed claim.
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	last := ""
	for time.Now().Before(deadline) {
		ok, why := cond()
		if ok {
			return
		}
		last = why
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: never happened; last: %s", what, last)
}

func TestSchemaRefusesBadObjects(t *testing.T) {
	e := newTestEnv(t)
	sha := strings.Repeat("ab", 32)
	cases := []struct {
		name string
		obj  client.Object
		want string
	}{
		{"path and prefix", &VoiceRoute{Spec: VoiceRouteSpec{Kind: "websocket", Match: &RouteMatch{Path: "/a", Prefix: "/b"}, BackendRef: LocalRef{Name: "b"}}}, "match a path or a prefix, not both"},
		{"no match outside tcp", &VoiceRoute{Spec: VoiceRouteSpec{Kind: "websocket", BackendRef: LocalRef{Name: "b"}}}, "matches a path or a prefix"},
		{"mode on http", &VoiceRoute{Spec: VoiceRouteSpec{Kind: "http", Mode: "upgrade", Match: &RouteMatch{Prefix: "/"}, BackendRef: LocalRef{Name: "b"}}}, "only websocket routes have a mode"},
		{"tcp without address", &VoiceRoute{Spec: VoiceRouteSpec{Kind: "websocket", Mode: "tcp", BackendRef: LocalRef{Name: "b"}}}, "tcpAddress is required in mode tcp"},
		{"unknown kind", &VoiceRoute{Spec: VoiceRouteSpec{Kind: "grpc", Match: &RouteMatch{Prefix: "/"}, BackendRef: LocalRef{Name: "b"}}}, "Unsupported value"},
		{"bad duration", &VoiceRoute{Spec: VoiceRouteSpec{Kind: "websocket", Match: &RouteMatch{Prefix: "/"}, BackendRef: LocalRef{Name: "b"}, IdleTimeout: &metav1.Duration{Duration: -time.Second}}}, "spec.idleTimeout"},
		{"endpoints and service", &VoiceBackend{Spec: VoiceBackendSpec{Endpoints: []string{"10.0.0.1:80"}, Service: &ServiceRef{Name: "s", Port: 80}}}, "set endpoints or service, exactly one"},
		{"neither endpoints nor service", &VoiceBackend{Spec: VoiceBackendSpec{}}, "set endpoints or service, exactly one"},
		{"port out of range", &VoiceBackend{Spec: VoiceBackendSpec{Service: &ServiceRef{Name: "s", Port: 70000}}}, "spec.service.port"},
		{"no credentials", &HandshakePolicy{Spec: HandshakePolicySpec{Sources: []TokenSource{{Bearer: true}}}}, "needs jwt, apiKeys or apiKeysSecretRef"},
		{"two token sources in one", &HandshakePolicy{Spec: HandshakePolicySpec{Sources: []TokenSource{{Bearer: true, Query: "t"}}, APIKeys: []APIKey{{SHA256: sha, Identity: "x"}}}}, "exactly one of bearer"},
		{"key not hex", &HandshakePolicy{Spec: HandshakePolicySpec{APIKeys: []APIKey{{SHA256: "secret", Identity: "x"}}}}, "spec.apiKeys[0].sha256"},
		{"keys and jwks url", &HandshakePolicy{Spec: HandshakePolicySpec{JWT: &JWT{JWKSURL: "https://idp/jwks", Keys: []JWK{{Kty: "oct", K: "a2V5"}}}}}, "keys or a jwksURL, exactly one"},
		{"target of another kind", &HandshakePolicy{Spec: HandshakePolicySpec{APIKeys: []APIKey{{SHA256: sha, Identity: "x"}}, TargetRefs: []PolicyTargetRef{{Group: "gateway.networking.k8s.io", Kind: "Service", Name: "s"}}}}, "spec.targetRefs[0].kind"},
		{"target named twice", &HandshakePolicy{Spec: HandshakePolicySpec{APIKeys: []APIKey{{SHA256: sha, Identity: "x"}}, TargetRefs: []PolicyTargetRef{{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "g"}, {Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "g"}}}}, "a target is named once"},
		{"plain-http jwks", &HandshakePolicy{Spec: HandshakePolicySpec{JWT: &JWT{JWKSURL: "http://idp/jwks"}}}, "spec.jwt.jwksURL"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.obj.SetName(fmt.Sprintf("bad-%d", i))
			c.obj.SetNamespace(e.ns)
			err := e.c.Create(context.Background(), c.obj)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("create: got %v, want an error containing %q", err, c.want)
			}
		})
	}
	// And a good one of each kind is taken.
	for _, o := range validObjects() {
		e.create(o)
	}
}

func validObjects() []client.Object {
	return []client.Object{
		&VoiceRoute{ObjectMeta: metav1.ObjectMeta{Name: "voice"}, Spec: VoiceRouteSpec{
			Match: &RouteMatch{Path: "/v1/voice"}, Kind: "websocket", BackendRef: LocalRef{Name: "agents"},
			HandshakePolicyRef: &LocalRef{Name: "callers"}, IdleTimeout: &metav1.Duration{Duration: 5 * time.Minute},
		}},
		&VoiceBackend{ObjectMeta: metav1.ObjectMeta{Name: "agents"}, Spec: VoiceBackendSpec{Service: &ServiceRef{Name: "agents", Port: 80}}},
		&HandshakePolicy{ObjectMeta: metav1.ObjectMeta{Name: "callers"}, Spec: HandshakePolicySpec{
			Sources: []TokenSource{{Bearer: true}}, APIKeys: []APIKey{{SHA256: strings.Repeat("ab", 32), Identity: "tester"}},
		}},
	}
}

// agentsService is the Service validObjects' back end names, with one
// ready endpoint and one terminating but still serving.
func (e *testEnv) agentsService() {
	e.t.Helper()
	e.create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "agents"}, Spec: corev1.ServiceSpec{
		Ports: []corev1.ServicePort{{Name: "ws", Port: 80}},
	}})
	yes, no := true, false
	name, port := "ws", int32(8080)
	e.create(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "agents-1", Labels: map[string]string{discoveryv1.LabelServiceName: "agents"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.1.0.1"}, Conditions: discoveryv1.EndpointConditions{Ready: &yes, Serving: &yes, Terminating: &no}},
			{Addresses: []string{"10.1.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &no, Serving: &yes, Terminating: &yes}},
			{Addresses: []string{"10.1.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: &no, Serving: &no, Terminating: &no}},
		},
	})
}

// served is what a replica's onChange saw: the control plane's part,
// played by validation.
type served struct {
	mu   sync.Mutex
	last *policyv1.Policy
}

func (s *served) onChange(p *policyv1.Policy) error {
	if err := policy.Validate(p); err != nil {
		return fmt.Errorf("invalid policy: %w", err)
	}
	s.mu.Lock()
	s.last = p
	s.mu.Unlock()
	return nil
}

func (s *served) get() *policyv1.Policy {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// replica starts a store watching e's namespace; stop ends it as a
// crashed replica would end (its Lease is not released).
func (e *testEnv) replica(name string) (*served, context.CancelFunc) {
	e.t.Helper()
	st, err := New(Config{
		REST: apiServer, Namespace: e.ns, Identity: name,
		Listeners:     []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}},
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: 500 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("replica", name),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = st.Watch(ctx, s.onChange)
	}()
	stop := func() {
		cancel()
		<-done
		st.Close()
	}
	e.t.Cleanup(stop)
	return s, stop
}

// condition reads one condition of an object.
func (e *testEnv) condition(obj client.Object, status *Status, typ string) (*metav1.Condition, int64) {
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: obj.GetName()}, obj); err != nil {
		return nil, 0
	}
	return meta.FindStatusCondition(status.Conditions, typ), obj.GetGeneration()
}

// waitCondition waits until obj's condition typ has status want at the
// object's current generation, and returns it.
func (e *testEnv) waitCondition(obj client.Object, status *Status, typ string, want metav1.ConditionStatus) *metav1.Condition {
	e.t.Helper()
	var got *metav1.Condition
	eventually(e.t, fmt.Sprintf("%s %s=%s", obj.GetName(), typ, want), func() (bool, string) {
		c, gen := e.condition(obj, status, typ)
		got = c
		if c == nil {
			return false, "no condition"
		}
		return c.Status == want && c.ObservedGeneration == gen && status.ObservedGeneration == gen, fmt.Sprintf("%+v at generation %d", *c, gen)
	})
	return got
}

func TestResourcesReconcileIntoPolicyAndStatus(t *testing.T) {
	e := newTestEnv(t)
	e.agentsService()
	for _, o := range validObjects() {
		e.create(o)
	}
	s, _ := e.replica("a")
	eventually(t, "the policy is served", func() (bool, string) {
		p := s.get()
		return p != nil && len(p.GetRoutes()) == 1, fmt.Sprint(p)
	})
	b := s.get().GetBackends()[0]
	if got := strings.Join(b.GetEndpoints(), ","); got != "10.1.0.1:8080,10.1.0.2:8080" {
		t.Errorf("endpoints %s: want the ready one and the terminating one that still serves", got)
	}
	if got := strings.Join(b.GetDrainingEndpoints(), ","); got != "10.1.0.2:8080" {
		t.Errorf("draining %s: want the terminating one", got)
	}
	route := &VoiceRoute{ObjectMeta: metav1.ObjectMeta{Name: "voice"}}
	e.waitCondition(route, &route.Status, Accepted, metav1.ConditionTrue)
	c := e.waitCondition(route, &route.Status, Programmed, metav1.ConditionTrue)
	if !strings.Contains(c.Message, policy.Revision(s.get())) {
		t.Errorf("Programmed message %q does not name the served revision %s", c.Message, policy.Revision(s.get()))
	}
	hp := &HandshakePolicy{ObjectMeta: metav1.ObjectMeta{Name: "callers"}}
	e.waitCondition(hp, &hp.Status, Programmed, metav1.ConditionTrue)

	// A route naming a back end that does not exist: refused by the full
	// validator, told to that route; the last good policy keeps serving.
	good := policy.Revision(s.get())
	e.create(&VoiceRoute{ObjectMeta: metav1.ObjectMeta{Name: "broken"}, Spec: VoiceRouteSpec{
		Match: &RouteMatch{Prefix: "/x/"}, Kind: "http", BackendRef: LocalRef{Name: "nowhere"},
	}})
	broken := &VoiceRoute{ObjectMeta: metav1.ObjectMeta{Name: "broken"}}
	c = e.waitCondition(broken, &broken.Status, Accepted, metav1.ConditionFalse)
	if c.Reason != ReasonInvalid || !strings.Contains(c.Message, `no backend named "nowhere"`) {
		t.Errorf("broken route's Accepted: %+v", c)
	}
	c = e.waitCondition(route, &route.Status, Programmed, metav1.ConditionFalse)
	if c.Reason != ReasonRefused {
		t.Errorf("voice route's Programmed while the namespace is refused: %+v", c)
	}
	if c, _ := e.condition(route, &route.Status, Accepted); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("the valid route is blamed: %+v", c)
	}
	if rev := policy.Revision(s.get()); rev != good {
		t.Errorf("a refused policy replaced the served one: %s, was %s", rev, good)
	}
	var events corev1.EventList
	eventually(t, "a warning event on the broken route", func() (bool, string) {
		if err := e.c.List(context.Background(), &events, client.InNamespace(e.ns)); err != nil {
			return false, err.Error()
		}
		for _, ev := range events.Items {
			if ev.InvolvedObject.Name == "broken" && ev.Type == corev1.EventTypeWarning && ev.Reason == ReasonInvalid {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d events", len(events.Items))
	})
	// Fixed: served again, everything Programmed.
	if err := e.c.Delete(context.Background(), broken); err != nil {
		t.Fatal(err)
	}
	e.waitCondition(route, &route.Status, Programmed, metav1.ConditionTrue)
}

func TestStatusLeaderFailover(t *testing.T) {
	e := newTestEnv(t)
	e.agentsService()
	for _, o := range validObjects() {
		e.create(o)
	}
	_, stopA := e.replica("a")
	route := &VoiceRoute{ObjectMeta: metav1.ObjectMeta{Name: "voice"}}
	e.waitCondition(route, &route.Status, Programmed, metav1.ConditionTrue)
	_, stopB := e.replica("b")
	defer stopB()
	lease := func() string {
		var l coordinationv1.Lease
		if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "directpipe-" + StatusElection}, &l); err != nil || l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	}
	if h := lease(); h != "a" {
		t.Fatalf("status lease held by %q, want a", h)
	}
	// Replica a stops (releasing its lease, as a shutdown does; after a
	// crash b would wait out the lease). A change made after that reaches
	// status only if b takes over.
	stopA()
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: "voice"}, route); err != nil {
		t.Fatal(err)
	}
	route.Spec.IdleTimeout = &metav1.Duration{Duration: time.Minute}
	if err := e.c.Update(context.Background(), route); err != nil {
		t.Fatal(err)
	}
	e.waitCondition(route, &route.Status, Programmed, metav1.ConditionTrue)
	if h := lease(); h != "b" {
		t.Errorf("status lease held by %q after a died, want b", h)
	}
}

func TestAPIKeysFromSecret(t *testing.T) {
	e := newTestEnv(t)
	e.agentsService()
	objs := validObjects()
	hp := objs[2].(*HandshakePolicy)
	hp.Spec.APIKeys = nil
	hp.Spec.APIKeysSecretRef = &LocalRef{Name: "caller-keys"}
	for _, o := range objs {
		e.create(o)
	}
	s, _ := e.replica("a")
	// No Secret yet: the policy is refused, and the handshake policy says
	// why.
	e.waitCondition(hp, &hp.Status, Accepted, metav1.ConditionFalse)
	if c := meta.FindStatusCondition(hp.Status.Conditions, Accepted); !strings.Contains(c.Message, `no Secret named "caller-keys"`) {
		t.Errorf("Accepted without its Secret: %+v", c)
	}
	if p := s.get(); p != nil {
		t.Errorf("a policy missing its keys was served: %v", p)
	}
	e.create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "caller-keys"}, Data: map[string][]byte{"tester": []byte("dp_live_key\n")}})
	e.waitCondition(hp, &hp.Status, Programmed, metav1.ConditionTrue)
	eventually(t, "the key served", func() (bool, string) {
		p := s.get()
		if p == nil {
			return false, "nothing served"
		}
		keys := p.GetAuthPolicies()[0].GetApiKeys()
		// sha256("dp_live_key"): the trailing newline a file-made Secret
		// carries is not part of the key.
		return len(keys) == 1 && keys[0].GetIdentity() == "tester" &&
			keys[0].GetSha256() == sha256Hex("dp_live_key"), fmt.Sprint(keys)
	})
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
