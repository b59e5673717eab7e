//go:build !wasip1

package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/encoding/protojson"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestRouteChangedAfterEditsIsDenied proves the second lock against a
// route re-match in a real Envoy (issue 11). Envoy matches a request again
// after the handshake filter edits its headers, so a route matching on a
// token header would hand the stripped request to another route, whose
// policy never ran. Policy validation refuses such a route; here the
// policy skips validation, and the routes and filter config the control
// plane would generate for it are loaded into Envoy as they are. The
// stripped request must be answered 500 route_changed, not forwarded.
// The native build does not clear Envoy's route cache after its edits
// (the dynamic-module ABI's header setters leave it), so there the request
// stays on the route whose policy it passed and reaches the back end with
// the verified identity, the key stripped: the route it was checked for,
// never the public one.
func TestRouteChangedAfterEditsIsDenied(t *testing.T) {
	for _, build := range testkit.FilterBuilds {
		t.Run(string(build), func(t *testing.T) { routeChangedAfterEdits(t, build) })
	}
}

func routeChangedAfterEdits(t *testing.T, build testkit.FilterBuild) {
	up := startUpstream(t)
	sum := sha256.Sum256([]byte(testAPIKey))
	p := &policyv1.Policy{
		Listeners: []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:1"}},
		Routes: []*policyv1.Route{
			// Taken only with the key: once the filter strips it, "open"
			// is what matches.
			{Name: "keyed", Kind: "http", Backend: "upstream", Auth: "keys", Match: &policyv1.RouteMatch{
				Prefix: "/k", Headers: []*policyv1.HeaderMatch{{Name: "x-api-key", Present: true}},
			}},
			{Name: "open", Kind: "http", Backend: "upstream", Match: &policyv1.RouteMatch{Prefix: "/"}},
		},
		Backends: []*policyv1.Backend{{Name: "upstream", Endpoints: []string{"127.0.0.1:1"}}},
		AuthPolicies: []*policyv1.AuthPolicy{{
			Name:           "keys",
			Sources:        []*policyv1.TokenSource{{Source: &policyv1.TokenSource_Header{Header: "x-api-key"}}},
			ApiKeys:        []*policyv1.APIKey{{Sha256: hex.EncodeToString(sum[:]), Identity: "demo-client"}},
			IdentityHeader: "x-directpipe-identity",
		}},
	}
	opts := translate.Options{Module: translate.ModuleSource{File: modulePath(t)}}
	if build == testkit.FilterNative {
		opts.Filter, opts.NativeModule = translate.FilterNative, translate.ModuleSource{File: testkit.NativeModule(t)}
	}
	res, err := translate.Translate(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	rc := res[resource.RouteType][0].(*routev3.RouteConfiguration)
	var routes []any
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		b, err := protojson.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		json.Unmarshal(b, &v)
		routes = append(routes, v)
	}
	// The handshake filter's config as the control plane would send it
	// by ECDS, here in the listener itself.
	b, err := protojson.Marshal(res[resource.ExtensionConfigType][0].(*corev3.TypedExtensionConfig).GetTypedConfig())
	if err != nil {
		t.Fatal(err)
	}
	var handshake map[string]any
	if err := json.Unmarshal(b, &handshake); err != nil {
		t.Fatal(err)
	}
	e := startEnvoyBootstrap(t, func(port, adminPort int) []byte {
		return bootstrapWithHandshake(port, adminPort, up.port, handshake, routes)
	})
	e.waitReady(t)

	resp, body := e.get(t, "/k/data", http.Header{"X-Api-Key": {testAPIKey}})
	if build == testkit.FilterNative {
		// No re-match: the keyed route, whose policy set the identity,
		// forwards the request and removes the marker.
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d %s, want 200 on the checked route", resp.StatusCode, body)
		}
		seen := up.last().header
		if got := seen.Get("X-Directpipe-Identity"); got != "demo-client" {
			t.Errorf("the upstream saw identity %q, want the checked route's demo-client", got)
		}
		if seen.Get("X-Api-Key") != "" || seen.Get("X-Directpipe-Route") != "" {
			t.Errorf("the upstream saw %v", seen)
		}
	} else {
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(string(body), "route_changed") {
			t.Fatalf("status %d %s, want 500 route_changed", resp.StatusCode, body)
		}
		if n := up.count(); n != 0 {
			t.Fatalf("the upstream saw %d requests; the re-matched request must not go on", n)
		}
	}
	// The public route serves, with a spoofed identity stripped (an edit,
	// so a re-match, which lands on the same route) and no marker.
	resp, body = e.get(t, "/k/data", http.Header{"X-Directpipe-Identity": {"admin"}})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("public route: status %d %s", resp.StatusCode, body)
	}
	seen := up.last().header
	if seen.Get("X-Directpipe-Identity") != "" || seen.Get("X-Directpipe-Route") != "" {
		t.Errorf("the upstream saw %v", seen)
	}
	// A client's own marker cannot pick a route past the check.
	resp, _ = e.get(t, "/k/data", http.Header{"X-Directpipe-Route": {"keyed"}})
	if resp.StatusCode == http.StatusOK {
		t.Error("a client marker naming a guarded route was forwarded")
	}
}
