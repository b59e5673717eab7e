// Package kube keeps the policy in the Kubernetes API server: three
// namespaced kinds of our own (VoiceRoute, VoiceBackend, HandshakePolicy)
// and the EndpointSlices of the Services back ends name. Every replica
// watches them and serves what they add up to; a Lease-elected leader
// writes what the control plane made of them to their status.
package kube

import (
	"encoding/json"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of the kinds.
var GroupVersion = schema.GroupVersion{Group: "directpipe.io", Version: "v1alpha1"}

// AddToScheme registers the kinds with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&VoiceRoute{}, &VoiceRouteList{},
		&VoiceBackend{}, &VoiceBackendList{},
		&HandshakePolicy{}, &HandshakePolicyList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// VoiceRoute sends matching requests to a back end, WebSocket upgrades on
// the direct path checked once by a handshake policy, or REST through the
// full filter chain.
type VoiceRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              VoiceRouteSpec `json:"spec"`
	Status            Status         `json:"status,omitempty"`
}

// VoiceRouteSpec is what an operator asks of a route.
type VoiceRouteSpec struct {
	Match *RouteMatch `json:"match,omitempty"`
	// Kind is websocket (the direct path) or http (the REST chain).
	Kind string `json:"kind"`
	// Mode of a websocket route: upgrade (default) or tcp.
	Mode string `json:"mode,omitempty"`
	// TCPAddress is the listener address of a tcp-mode route.
	TCPAddress string `json:"tcpAddress,omitempty"`
	// BackendRef names a VoiceBackend in the route's namespace.
	BackendRef LocalRef `json:"backendRef"`
	// HandshakePolicyRef names a HandshakePolicy in the route's namespace.
	HandshakePolicyRef *LocalRef `json:"handshakePolicyRef,omitempty"`
	// IdleTimeout ends a stream that carried nothing for this long.
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`
	// MaxStreamDuration ends any stream after this long.
	MaxStreamDuration *metav1.Duration `json:"maxStreamDuration,omitempty"`
}

// RouteMatch selects requests by path and host.
type RouteMatch struct {
	Path   string   `json:"path,omitempty"`
	Prefix string   `json:"prefix,omitempty"`
	Hosts  []string `json:"hosts,omitempty"`
}

// LocalRef names an object in the referrer's namespace.
type LocalRef struct {
	Name string `json:"name"`
}

// VoiceBackend is where routes send streams: fixed endpoints, or a
// Service whose EndpointSlices the control plane follows.
type VoiceBackend struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              VoiceBackendSpec `json:"spec"`
	Status            Status           `json:"status,omitempty"`
}

// VoiceBackendSpec is a back end: endpoints or service, not both.
type VoiceBackendSpec struct {
	// Endpoints are host:port addresses.
	Endpoints []string    `json:"endpoints,omitempty"`
	Service   *ServiceRef `json:"service,omitempty"`
	// ConnectTimeout bounds opening an upstream connection.
	ConnectTimeout *metav1.Duration `json:"connectTimeout,omitempty"`
	// LB is round_robin, least_request or least_streams.
	LB string `json:"lb,omitempty"`
	// MaxStreams is each endpoint's capacity in live streams, which
	// least_streams weighs against the fleet-wide counts.
	MaxStreams uint32 `json:"maxStreams,omitempty"`
	// SlowStart ramps a new endpoint up under least_streams.
	SlowStart *metav1.Duration `json:"slowStart,omitempty"`
	// DrainPath is where the back end takes drain and rebalance requests.
	DrainPath string `json:"drainPath,omitempty"`
	// MaxConnections raises Envoy's circuit breakers: every live call holds
	// one upstream connection and one request.
	MaxConnections uint32 `json:"maxConnections,omitempty"`
}

// ServiceRef names a Service port; its EndpointSlices give the endpoints.
type ServiceRef struct {
	Name string `json:"name"`
	// Namespace defaults to the back end's.
	Namespace string `json:"namespace,omitempty"`
	// Port is the Service port's number (the endpoints' target port is
	// taken from the slices).
	Port int32 `json:"port"`
}

// HandshakePolicy says how a stream proves who it is at the handshake.
type HandshakePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              HandshakePolicySpec `json:"spec"`
	Status            Status              `json:"status,omitempty"`
}

// HandshakePolicySpec mirrors the policy's auth policy.
type HandshakePolicySpec struct {
	// Sources are where to look for the token, in order.
	Sources []TokenSource `json:"sources,omitempty"`
	JWT     *JWT          `json:"jwt,omitempty"`
	APIKeys []APIKey      `json:"apiKeys,omitempty"`
	// APIKeysSecretRef names a Secret in the namespace whose entries are
	// identity: API key. The control plane keeps only each key's SHA-256.
	APIKeysSecretRef *LocalRef `json:"apiKeysSecretRef,omitempty"`
	// IdentityHeader carries the verified identity upstream.
	IdentityHeader string `json:"identityHeader,omitempty"`
	// ClaimHeaders maps a claim to the request header that carries it.
	ClaimHeaders map[string]string `json:"claimHeaders,omitempty"`
	Origins      *Origins          `json:"origins,omitempty"`
	// TargetRefs attach the policy to Gateway API objects (policy
	// attachment): a Gateway (every WebSocket rule of the HTTPRoutes on
	// it) or an HTTPRoute (its WebSocket rules; it wins over the
	// Gateway's).
	TargetRefs []PolicyTargetRef `json:"targetRefs,omitempty"`
}

// PolicyTargetRef names a Gateway API object of the policy's namespace.
type PolicyTargetRef struct {
	// Group is gateway.networking.k8s.io.
	Group string `json:"group"`
	// Kind is Gateway or HTTPRoute.
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// TokenSource is one place a token may be: exactly one field set.
type TokenSource struct {
	Bearer            bool   `json:"bearer,omitempty"`
	Query             string `json:"query,omitempty"`
	Header            string `json:"header,omitempty"`
	SubprotocolPrefix string `json:"subprotocolPrefix,omitempty"`
}

// JWT verifies signed tokens.
type JWT struct {
	Issuer    string           `json:"issuer,omitempty"`
	Audiences []string         `json:"audiences,omitempty"`
	Keys      []JWK            `json:"keys,omitempty"`
	JWKSURL   string           `json:"jwksURL,omitempty"`
	Leeway    *metav1.Duration `json:"leeway,omitempty"`
}

// JWK is one public (or shared) key, as RFC 7517 spells it.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Alg string `json:"alg,omitempty"`
	K   string `json:"k,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
}

// APIKey is a key's SHA-256 (hex) and who holds it: the key itself is
// never stored.
type APIKey struct {
	SHA256   string `json:"sha256"`
	Identity string `json:"identity"`
}

// Origins lists the pages that may open streams.
type Origins struct {
	Allow        []string `json:"allow,omitempty"`
	AllowMissing bool     `json:"allowMissing,omitempty"`
}

// Status is what the control plane made of an object.
type Status struct {
	ObservedGeneration int64              `json:"observedGeneration,omitempty"`
	Conditions         []metav1.Condition `json:"conditions,omitempty"`
}

// Lists.
type (
	VoiceRouteList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata,omitempty"`
		Items           []VoiceRoute `json:"items"`
	}
	VoiceBackendList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata,omitempty"`
		Items           []VoiceBackend `json:"items"`
	}
	HandshakePolicyList struct {
		metav1.TypeMeta `json:",inline"`
		metav1.ListMeta `json:"metadata,omitempty"`
		Items           []HandshakePolicy `json:"items"`
	}
)

// deepCopy copies through JSON: the kinds hold only JSON-shaped data and
// are small, so one generic copy replaces generated code that would have to
// be kept in step by hand.
func deepCopy[T any](in *T) *T {
	b, err := json.Marshal(in)
	if err != nil {
		panic("kube: copying an object: " + err.Error())
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		panic("kube: copying an object: " + err.Error())
	}
	return out
}

func (o *VoiceRoute) DeepCopyObject() runtime.Object          { return deepCopy(o) }
func (o *VoiceRouteList) DeepCopyObject() runtime.Object      { return deepCopy(o) }
func (o *VoiceBackend) DeepCopyObject() runtime.Object        { return deepCopy(o) }
func (o *VoiceBackendList) DeepCopyObject() runtime.Object    { return deepCopy(o) }
func (o *HandshakePolicy) DeepCopyObject() runtime.Object     { return deepCopy(o) }
func (o *HandshakePolicyList) DeepCopyObject() runtime.Object { return deepCopy(o) }
