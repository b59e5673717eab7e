package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/store"
)

// errReadOnly is what Put returns: the resources are the policy, and they
// are changed through the API server (kubectl, GitOps), never around it.
var errReadOnly = fmt.Errorf("%w: on Kubernetes the policy is the namespace's VoiceRoute, VoiceBackend and HandshakePolicy resources; change them with kubectl apply", store.ErrReadOnly)

// Config says where the resources are and how to serve them.
type Config struct {
	REST *rest.Config
	// Namespace holds the resources and the leases.
	Namespace string
	// Listeners are the Envoy listeners every route is served on: where
	// Envoy listens is the deployment's business, not a resource's.
	Listeners []*policyv1.Listener
	// GatewayHost is the address Gateway API listeners bind (a listener
	// on port p listens on GatewayHost:p); empty: 0.0.0.0.
	GatewayHost string
	// Identity names this replica in leases and events.
	Identity string
	// History is how many served revisions are kept.
	History int
	// LeaseDuration, RenewDeadline and RetryPeriod tune the elections
	// (zero: 15s, 10s, 2s, as Kubernetes' own controllers).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Log                                       *slog.Logger
}

// Store is the kubernetes store: a store.Shared whose policy is the
// namespace's resources.
type Store struct {
	cfg    Config
	cache  cache.Cache
	client client.Client
	kube   kubernetes.Interface
	status *statusWriter
	stop   context.CancelFunc

	changed chan struct{} // a resource changed: build again
	// gatewayAPI says the Gateway API's kinds are installed, so watched.
	gatewayAPI bool

	mu      sync.Mutex
	history []store.Entry
	values  map[string][]byte
}

// NewScheme holds the kinds the store reads.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := errors.Join(clientgoscheme.AddToScheme(s), AddToScheme(s), gatewayv1.Install(s)); err != nil {
		return nil, fmt.Errorf("kube: scheme: %w", err)
	}
	return s, nil
}

// New connects to the API server and starts watching; Load waits until
// the first lists are in.
func New(cfg Config) (*Store, error) {
	if cfg.Namespace == "" {
		return nil, errors.New("kube: a namespace is required")
	}
	if cfg.History <= 0 {
		cfg.History = store.DefaultHistory
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.LeaseDuration, 15 * time.Second}, {&cfg.RenewDeadline, 10 * time.Second}, {&cfg.RetryPeriod, 2 * time.Second}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	c, err := cache.New(cfg.REST, cache.Options{Scheme: scheme, DefaultNamespaces: map[string]cache.Config{cfg.Namespace: {}}})
	if err != nil {
		return nil, fmt.Errorf("kube: cache: %w", err)
	}
	cl, err := client.New(cfg.REST, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("kube: client: %w", err)
	}
	kc, err := kubernetes.NewForConfig(cfg.REST)
	if err != nil {
		return nil, fmt.Errorf("kube: clientset: %w", err)
	}
	if cfg.GatewayHost == "" {
		cfg.GatewayHost = "0.0.0.0"
	}
	gatewayAPI, err := installed(cl, gatewayv1.SchemeGroupVersion.WithKind("HTTPRoute"))
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Store{cfg: cfg, cache: c, client: cl, kube: kc, stop: stop, changed: make(chan struct{}, 1), values: map[string][]byte{}, gatewayAPI: gatewayAPI}
	s.status = newStatusWriter(s, scheme)
	watched := []client.Object{&VoiceRoute{}, &VoiceBackend{}, &HandshakePolicy{}, &corev1.Service{}, &discoveryv1.EndpointSlice{}, &corev1.Secret{}}
	if gatewayAPI {
		watched = append(watched, &gatewayv1.GatewayClass{}, &gatewayv1.Gateway{}, &gatewayv1.HTTPRoute{})
	} else {
		cfg.Log.Info("the Gateway API is not installed: serving directpipe's own kinds only (install its CRDs and restart to serve Gateways)")
	}
	for _, obj := range watched {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			stop()
			return nil, fmt.Errorf("kube: watching %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { s.poke() },
			UpdateFunc: func(any, any) { s.poke() },
			DeleteFunc: func(any) { s.poke() },
		}); err != nil {
			stop()
			return nil, fmt.Errorf("kube: watching %T: %w", obj, err)
		}
	}
	go func() {
		if err := c.Start(ctx); err != nil {
			cfg.Log.Error("kubernetes watch ended", "error", err)
		}
	}()
	return s, nil
}

// installed says whether the API server serves a kind.
func installed(cl client.Client, gvk schema.GroupVersionKind) (bool, error) {
	_, err := cl.RESTMapper().RESTMapping(gvk.GroupKind(), gvk.Version)
	switch {
	case err == nil:
		return true, nil
	case meta.IsNoMatchError(err):
		return false, nil
	}
	return false, fmt.Errorf("kube: looking up %s: %w", gvk.Kind, err)
}

func (s *Store) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// build lists the resources and builds the policy.
func (s *Store) build(ctx context.Context) (*Built, error) {
	if !s.cache.WaitForCacheSync(ctx) {
		return nil, fmt.Errorf("%w: the kubernetes watch has not synced", store.ErrUnavailable)
	}
	ns := client.InNamespace(s.cfg.Namespace)
	var routes VoiceRouteList
	var backends VoiceBackendList
	var policies HandshakePolicyList
	for _, l := range []client.ObjectList{&routes, &backends, &policies} {
		if err := s.cache.List(ctx, l, ns); err != nil {
			return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	objs := Objects{Routes: routes.Items, Backends: backends.Items, Policies: policies.Items, Secret: func(name string) (map[string][]byte, bool) {
		var sec corev1.Secret
		if err := s.cache.Get(ctx, client.ObjectKey{Namespace: s.cfg.Namespace, Name: name}, &sec); err != nil {
			return nil, false
		}
		return sec.Data, true
	}}
	if s.gatewayAPI {
		g, err := s.gatewayObjects(ctx)
		if err != nil {
			return nil, err
		}
		objs.Gateway = g
	}
	b := Build(s.cfg.Listeners, objs, func(ref ServiceRef) Endpoints {
		return s.endpoints(ctx, ref)
	})
	return b, nil
}

// gatewayObjects lists the Gateway API objects: every GatewayClass (they
// are cluster-wide), the namespace's Gateways and HTTPRoutes.
func (s *Store) gatewayObjects(ctx context.Context) (*GatewayObjects, error) {
	var classes gatewayv1.GatewayClassList
	var gateways gatewayv1.GatewayList
	var routes gatewayv1.HTTPRouteList
	if err := s.cache.List(ctx, &classes); err != nil {
		return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	for _, l := range []client.ObjectList{&gateways, &routes} {
		if err := s.cache.List(ctx, l, client.InNamespace(s.cfg.Namespace)); err != nil {
			return nil, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	return &GatewayObjects{
		Classes: classes.Items, Gateways: gateways.Items, Routes: routes.Items, Host: s.cfg.GatewayHost,
		Service: func(name string) (*corev1.Service, bool) {
			var svc corev1.Service
			if err := s.cache.Get(ctx, client.ObjectKey{Namespace: s.cfg.Namespace, Name: name}, &svc); err != nil {
				return nil, false
			}
			return &svc, true
		},
	}, nil
}

// endpoints reads a Service port's endpoints from the watched slices.
// Only the store's namespace is watched: a Service elsewhere has none,
// and the back end says so in its status.
func (s *Store) endpoints(ctx context.Context, ref ServiceRef) Endpoints {
	if ref.Namespace != s.cfg.Namespace {
		return Endpoints{}
	}
	var svc corev1.Service
	if err := s.cache.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &svc); err != nil {
		return Endpoints{}
	}
	var sl discoveryv1.EndpointSliceList
	if err := s.cache.List(ctx, &sl, client.InNamespace(ref.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: ref.Name}); err != nil {
		return Endpoints{}
	}
	return SliceEndpoints(ref, &svc, sl.Items)
}

// Load returns the policy the resources make. A namespace without routes
// holds no policy yet.
func (s *Store) Load(ctx context.Context) (*policyv1.Policy, string, error) {
	b, err := s.build(ctx)
	if err != nil {
		return nil, "", err
	}
	if len(b.Policy.GetRoutes()) == 0 {
		return nil, "", store.ErrNotFound
	}
	if err := b.Err(); err != nil {
		return nil, "", err
	}
	return b.Policy, policy.Revision(b.Policy), nil
}

// Put is refused: see errReadOnly.
func (s *Store) Put(context.Context, *policyv1.Policy, string) (string, error) {
	return "", errReadOnly
}

// Watch builds the policy each time a resource changes and hands it to
// onChange; what onChange says of it (nil: served) becomes the objects'
// status, written by the elected leader.
func (s *Store) Watch(ctx context.Context, onChange func(*policyv1.Policy) error) error {
	go s.Lead(ctx, StatusElection, s.status.run)
	s.poke()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.changed:
		}
		b, err := s.build(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.cfg.Log.Warn("reading the kubernetes resources failed; the last good policy keeps serving", "error", err)
			continue
		}
		served := b.Err()
		switch {
		case served != nil:
		case len(b.Policy.GetRoutes()) == 0:
			served = errors.New("no VoiceRoute and no HTTPRoute on a Gateway in the namespace: nothing to serve")
		default:
			served = onChange(b.Policy)
			if served == nil {
				s.record(b.Policy)
			}
		}
		s.status.observe(b, served)
	}
}

// record adds a served policy to the history.
func (s *Store) record(p *policyv1.Policy) {
	rev := policy.Revision(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.history) > 0 && s.history[0].Revision == rev {
		return
	}
	s.history = append([]store.Entry{{Revision: rev, AppliedAt: time.Now(), By: s.cfg.Identity, Policy: p}}, s.history...)
	if len(s.history) > s.cfg.History {
		s.history = s.history[:s.cfg.History]
	}
}

// History is the revisions this replica served since it started, newest
// first: the API server keeps no history of a set of resources, so the
// record of what was applied is wherever the manifests live (git).
func (s *Store) History(context.Context) ([]store.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]store.Entry(nil), s.history...), nil
}

// Close stops the watch.
func (s *Store) Close() error {
	s.stop()
	return nil
}

// PublishNodes keeps nothing: on Kubernetes each replica shows the Envoys
// it serves itself.
func (s *Store) PublishNodes(context.Context, map[string][]byte) error { return nil }

// Nodes returns no other replica's records (see PublishNodes).
func (s *Store) Nodes(context.Context) ([]store.NodeRecord, error) { return nil, nil }

// StatusElection is the Lease ("directpipe-status") whose holder writes
// status and events.
const StatusElection = "status"

// Lead runs fn while this replica holds the Lease "directpipe-<name>" in
// the namespace, again each time it wins it back, until ctx ends.
//
// Only status is elected. The other once-only work of a shared store
// (fetching JWKS URLs, ending drains) shares its result through stored
// values, which this store keeps per replica: so every replica does that
// work for itself, as a single control plane would, and leads it always.
func (s *Store) Lead(ctx context.Context, name string, fn func(ctx context.Context)) error {
	if name != StatusElection {
		fn(ctx)
		return ctx.Err()
	}
	return s.elect(ctx, name, fn)
}

// elect runs fn whenever this replica holds the named Lease.
func (s *Store) elect(ctx context.Context, name string, fn func(ctx context.Context)) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: s.cfg.Namespace, Name: "directpipe-" + name},
		Client:     s.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: s.cfg.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			Name:            name,
			LeaseDuration:   s.cfg.LeaseDuration,
			RenewDeadline:   s.cfg.RenewDeadline,
			RetryPeriod:     s.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					s.cfg.Log.Info("leading", "election", name, "replica", s.cfg.Identity)
					fn(lctx)
				},
				OnStoppedLeading: func() {},
			},
		})
		if err != nil {
			return fmt.Errorf("kube: election %s: %w", name, err)
		}
		le.Run(ctx)
	}
	return ctx.Err()
}

// PutValue keeps a value for this replica only.
//
// Every replica does the work whose results other stores share (see
// Lead), so nothing needs sharing.
func (s *Store) PutValue(_ context.Context, name string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.values[name] = append([]byte(nil), value...)
	return nil
}

// Value reads a value PutValue kept.
func (s *Store) Value(_ context.Context, name string) ([]byte, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.values[name]
	return v, ok, nil
}

// WatchValues calls fn with the values kept so far, then returns when ctx
// ends: values never come from another replica.
func (s *Store) WatchValues(ctx context.Context, fn func(name string, value []byte)) error {
	s.mu.Lock()
	vals := make(map[string][]byte, len(s.values))
	for k, v := range s.values {
		vals[k] = v
	}
	s.mu.Unlock()
	for k, v := range vals {
		fn(k, v)
	}
	<-ctx.Done()
	return ctx.Err()
}

var _ store.Shared = (*Store)(nil)
