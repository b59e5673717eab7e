package translate

import (
	"path/filepath"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/directpipe/directpipe/controlplane/policy"
)

// TestEndpointDrainGolden: a draining endpoint stays in EDS marked
// DRAINING, a drained one leaves it, the others are untouched; and a drain
// moves nothing but EDS, so no listener, route, cluster or filter config
// (each would cost Envoy work, and a listener its connections).
func TestEndpointDrainGolden(t *testing.T) {
	p, err := policy.LoadFile("testdata/example.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := p.GetBackends()[0]
	b.Endpoints = []string{"127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003"}
	before, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions
	opts.Drains = map[string]map[string]DrainPhase{b.GetName(): {"127.0.0.1:9001": Draining, "127.0.0.1:9003": Drained}}
	after, err := Translate(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.ExtensionConfigType} {
		if len(before[typ]) != len(after[typ]) {
			t.Fatalf("%s: %d resources before the drain, %d after", typ, len(before[typ]), len(after[typ]))
		}
		for i := range before[typ] {
			if !proto.Equal(before[typ][i], after[typ][i]) {
				t.Errorf("a drain changed %s %q", typ, name(after[typ][i]))
			}
		}
	}
	golden(t, filepath.Join("testdata", "drain", "endpoints.yaml"), render(t, after[resource.EndpointType]))
}
