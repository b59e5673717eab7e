package kube

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/types/known/durationpb"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// Objects are the resources of one namespace a policy is built from.
type Objects struct {
	Routes   []VoiceRoute
	Backends []VoiceBackend
	Policies []HandshakePolicy
	// Secret returns a Secret's data by name (false: there is none).
	Secret func(name string) (map[string][]byte, bool)
	// Gateway holds the Gateway API objects; nil where the Gateway API
	// is not installed.
	Gateway *GatewayObjects
}

// MaxSecretKeys bounds the API keys one Secret may hold.
const MaxSecretKeys = 10_000

// Endpoints says which addresses serve a Service port: ready ones take
// new streams, draining ones (terminating but still serving) keep the
// streams they hold and take no new one.
type Endpoints struct {
	Ready, Draining []string
}

// EndpointsFunc looks up a Service port's endpoints.
type EndpointsFunc func(ref ServiceRef) Endpoints

// Built is a policy and where each of its parts came from, so the
// validator's complaints can be told to the object that caused them.
type Built struct {
	Policy *policyv1.Policy
	// Routes, Backends and Policies are the objects in the order the
	// policy lists them.
	Routes   []*VoiceRoute
	Backends []*VoiceBackend
	Policies []*HandshakePolicy
	// Gateway is what became of the Gateway API objects (nil without
	// them).
	Gateway *GatewayResult
	// gatewayRoutes and gatewayBackends name the HTTPRoute each policy
	// route and back end after our own kinds' came from.
	gatewayRoutes, gatewayBackends []string
	// refused are problems found while building, by object (see Key).
	refused map[string][]string
	// notes are problems that refuse no policy (a handshake policy that
	// lost a conflict), by object.
	notes map[string][]string
}

// Build turns the objects into a policy served on listeners. Objects are
// sorted by name so the same objects always build the same policy (and
// so the same revision), whatever order the watch delivered them in.
func Build(listeners []*policyv1.Listener, objs Objects, endpoints EndpointsFunc) *Built {
	b := &Built{Policy: &policyv1.Policy{Listeners: listeners}, refused: map[string][]string{}, notes: map[string][]string{}}
	routes := sortedPtrs(objs.Routes, func(o *VoiceRoute) string { return o.Name })
	backends := sortedPtrs(objs.Backends, func(o *VoiceBackend) string { return o.Name })
	policies := sortedPtrs(objs.Policies, func(o *HandshakePolicy) string { return o.Name })
	for _, r := range routes {
		b.Routes = append(b.Routes, r)
		b.Policy.Routes = append(b.Policy.Routes, route(r))
	}
	for _, be := range backends {
		b.Backends = append(b.Backends, be)
		pb := backend(be)
		if s := be.Spec.Service; s != nil {
			ref := *s
			if ref.Namespace == "" {
				ref.Namespace = be.Namespace
			}
			eps := endpoints(ref)
			// Draining endpoints stay listed so the streams they hold are
			// still routed and counted; EDS marks them DRAINING.
			pb.Endpoints = append(append([]string{}, eps.Ready...), eps.Draining...)
			pb.DrainingEndpoints = eps.Draining
			pb.Discovered = true
		}
		b.Policy.Backends = append(b.Policy.Backends, pb)
	}
	for _, hp := range policies {
		b.Policies = append(b.Policies, hp)
		ap := authPolicy(hp)
		if ref := hp.Spec.APIKeysSecretRef; ref != nil {
			keys, err := secretKeys(ref.Name, objs.Secret)
			if err != nil {
				k := Key("HandshakePolicy", hp.Name)
				b.refused[k] = append(b.refused[k], "apiKeysSecretRef: "+err.Error())
			}
			ap.ApiKeys = append(ap.ApiKeys, keys...)
		}
		b.Policy.AuthPolicies = append(b.Policy.AuthPolicies, ap)
	}
	if objs.Gateway != nil {
		b.addGateway(listeners, objs, endpoints)
	}
	return b
}

// addGateway adds what the Gateway API objects make: their listeners
// after the deployment's, their routes after our own kinds'.
func (b *Built) addGateway(listeners []*policyv1.Listener, objs Objects, endpoints EndpointsFunc) {
	taken := make([]string, 0, len(listeners))
	for _, l := range listeners {
		taken = append(taken, l.GetAddress())
	}
	g, notes := buildGateway(objs.Gateway, taken, b.Policies, endpoints)
	b.Gateway = g.res
	for k, v := range notes {
		b.notes[k] = append(b.notes[k], v...)
	}
	if len(g.listeners) > 0 && len(listeners) == 1 {
		// With more than one listener a route must name its own: our
		// kinds' routes keep the deployment's.
		for _, r := range b.Policy.Routes {
			if r.Listener == "" && r.Tcp == nil {
				r.Listener = listeners[0].GetName()
			}
		}
	}
	b.Policy.Listeners = append(slices.Clone(b.Policy.Listeners), g.listeners...)
	for _, r := range g.routes {
		b.Policy.Routes = append(b.Policy.Routes, r.route)
		b.gatewayRoutes = append(b.gatewayRoutes, r.owner)
	}
	for _, name := range slices.Sorted(maps.Keys(g.backends)) {
		b.Policy.Backends = append(b.Policy.Backends, g.backends[name])
		b.gatewayBackends = append(b.gatewayBackends, g.backendOwner[name])
	}
}

func sortedPtrs[T any](items []T, name func(*T) string) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	sort.Slice(out, func(i, j int) bool { return name(out[i]) < name(out[j]) })
	return out
}

func duration(d *metav1.Duration) *durationpb.Duration {
	if d == nil {
		return nil
	}
	return durationpb.New(d.Duration)
}

func route(r *VoiceRoute) *policyv1.Route {
	s := r.Spec
	out := &policyv1.Route{
		Name:              r.Name,
		Kind:              s.Kind,
		Mode:              s.Mode,
		Backend:           s.BackendRef.Name,
		IdleTimeout:       duration(s.IdleTimeout),
		MaxStreamDuration: duration(s.MaxStreamDuration),
	}
	if m := s.Match; m != nil {
		out.Match = &policyv1.RouteMatch{Path: m.Path, Prefix: m.Prefix, Hosts: m.Hosts}
	}
	if s.HandshakePolicyRef != nil {
		out.Auth = s.HandshakePolicyRef.Name
	}
	if s.TCPAddress != "" {
		out.Tcp = &policyv1.TCPRoute{Address: s.TCPAddress}
	}
	return out
}

func backend(b *VoiceBackend) *policyv1.Backend {
	s := b.Spec
	out := &policyv1.Backend{
		Name:           b.Name,
		Endpoints:      s.Endpoints,
		ConnectTimeout: duration(s.ConnectTimeout),
		Lb:             s.LB,
		MaxStreams:     s.MaxStreams,
		SlowStart:      duration(s.SlowStart),
		DrainPath:      s.DrainPath,
	}
	if s.MaxConnections > 0 {
		out.CircuitBreakers = &policyv1.CircuitBreakers{MaxConnections: s.MaxConnections, MaxRequests: s.MaxConnections}
	}
	return out
}

func authPolicy(h *HandshakePolicy) *policyv1.AuthPolicy {
	s := h.Spec
	out := &policyv1.AuthPolicy{
		Name:           h.Name,
		IdentityHeader: s.IdentityHeader,
		ClaimHeaders:   s.ClaimHeaders,
	}
	for _, src := range s.Sources {
		ts := &policyv1.TokenSource{}
		switch {
		case src.Bearer:
			ts.Source = &policyv1.TokenSource_Bearer{Bearer: true}
		case src.Query != "":
			ts.Source = &policyv1.TokenSource_Query{Query: src.Query}
		case src.Header != "":
			ts.Source = &policyv1.TokenSource_Header{Header: src.Header}
		case src.SubprotocolPrefix != "":
			ts.Source = &policyv1.TokenSource_SubprotocolPrefix{SubprotocolPrefix: src.SubprotocolPrefix}
		}
		out.Sources = append(out.Sources, ts)
	}
	if j := s.JWT; j != nil {
		pj := &policyv1.JWT{Issuer: j.Issuer, Audiences: j.Audiences, JwksUrl: j.JWKSURL, Leeway: duration(j.Leeway)}
		for _, k := range j.Keys {
			pj.Keys = append(pj.Keys, &policyv1.JWK{Kty: k.Kty, Kid: k.Kid, Alg: k.Alg, K: k.K, N: k.N, E: k.E, Crv: k.Crv, X: k.X, Y: k.Y})
		}
		out.Jwt = pj
	}
	for _, k := range s.APIKeys {
		out.ApiKeys = append(out.ApiKeys, &policyv1.APIKey{Sha256: k.SHA256, Identity: k.Identity})
	}
	if o := s.Origins; o != nil {
		out.Origins = &policyv1.Origins{Allow: o.Allow, AllowMissing: o.AllowMissing}
	}
	return out
}

// Err reports what building refused (a missing Secret): such a policy is
// not served, as one that fails validation is not, so a key that cannot
// be read never silently drops out of a handshake policy.
func (b *Built) Err() error {
	keys := make([]string, 0, len(b.refused))
	for k := range b.refused {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var msgs []string
	for _, k := range keys {
		msgs = append(msgs, k+": "+strings.Join(b.refused[k], "; "))
	}
	if len(msgs) == 0 {
		return nil
	}
	return fmt.Errorf("invalid resources: %s", strings.Join(msgs, "; "))
}

// secretKeys reads API keys from a Secret's entries, identity: key, and
// keeps only their SHA-256, in identity order.
func secretKeys(name string, secret func(string) (map[string][]byte, bool)) ([]*policyv1.APIKey, error) {
	data, ok := map[string][]byte(nil), false
	if secret != nil {
		data, ok = secret(name)
	}
	if !ok {
		return nil, fmt.Errorf("no Secret named %q", name)
	}
	if len(data) > MaxSecretKeys {
		return nil, fmt.Errorf("Secret %q holds %d entries, more than the %d allowed", name, len(data), MaxSecretKeys)
	}
	ids := make([]string, 0, len(data))
	for id := range data {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []*policyv1.APIKey
	for _, id := range ids {
		key := strings.TrimSpace(string(data[id]))
		if key == "" {
			return nil, fmt.Errorf("Secret %q: entry %q is empty", name, id)
		}
		sum := sha256.Sum256([]byte(key))
		out = append(out, &policyv1.APIKey{Sha256: hex.EncodeToString(sum[:]), Identity: id})
	}
	return out, nil
}

// problemPath finds the part a validation message is about:
// "routes[2].backend: ..." is about the third route.
var problemPath = regexp.MustCompile(`^(routes|backends|auth_policies)\[(\d+)\]`)

// Problems splits the validator's error into messages by object, keyed
// kind/name. Messages about no object of ours (listeners, the policy as a
// whole) go to every route, which is what a user looks at.
func (b *Built) Problems(err error) map[string][]string {
	out := map[string][]string{}
	for k, msgs := range b.refused {
		out[k] = append(out[k], msgs...)
	}
	for k, msgs := range b.notes {
		out[k] = append(out[k], msgs...)
	}
	if err == nil {
		return out
	}
	for _, line := range strings.Split(err.Error(), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "invalid policy: ")
		if line == "" {
			continue
		}
		m := problemPath.FindStringSubmatch(line)
		if m == nil {
			for _, r := range b.Routes {
				out[Key("VoiceRoute", r.Name)] = append(out[Key("VoiceRoute", r.Name)], line)
			}
			continue
		}
		i, _ := strconv.Atoi(m[2])
		var key string
		switch {
		case m[1] == "routes" && i < len(b.Routes):
			key = Key("VoiceRoute", b.Routes[i].Name)
		case m[1] == "backends" && i < len(b.Backends):
			key = Key("VoiceBackend", b.Backends[i].Name)
		case m[1] == "auth_policies" && i < len(b.Policies):
			key = Key("HandshakePolicy", b.Policies[i].Name)
		case m[1] == "routes" && i-len(b.Routes) < len(b.gatewayRoutes):
			key = b.gatewayRoutes[i-len(b.Routes)]
		case m[1] == "backends" && i-len(b.Backends) < len(b.gatewayBackends):
			key = b.gatewayBackends[i-len(b.Backends)]
		default:
			continue
		}
		out[key] = append(out[key], line)
	}
	return out
}

// Key names an object by kind and name.
func Key(kind, name string) string { return fmt.Sprintf("%s/%s", kind, name) }
