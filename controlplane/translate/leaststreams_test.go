package translate

import (
	"maps"
	"os"
	"path/filepath"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/directpipe/directpipe/controlplane/policy"
)

// TestStreamWeightsGolden: the fleet-wide counts move only EDS weights
// (no listener, route, cluster or filter config), endpoints draining or
// drained carry none, and a loaded endpoint weighs less than an idle one.
func TestStreamWeightsGolden(t *testing.T) {
	p, err := policy.LoadFile("testdata/least-streams.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	before, err := Translate(p, testOptions)
	if err != nil {
		t.Fatal(err)
	}
	opts := testOptions
	opts.Streams = map[string]map[string]uint64{"voice": {"127.0.0.1:8081": 150, "127.0.0.1:8083": 20, "127.0.0.1:8085": 0, "10.9.9.9:1": 7}}
	after, err := Translate(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.ExtensionConfigType} {
		for i := range before[typ] {
			if !proto.Equal(before[typ][i], after[typ][i]) {
				t.Errorf("counts changed %s %q", typ, name(after[typ][i]))
			}
		}
	}
	opts.Drains = map[string]map[string]DrainPhase{"voice": {"127.0.0.1:8083": Draining}}
	drained, err := Translate(p, opts)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, filepath.Join("testdata", "least-streams", "endpoints.yaml"), render(t, after[resource.EndpointType]))
	golden(t, filepath.Join("testdata", "least-streams", "endpoints-draining.yaml"), render(t, drained[resource.EndpointType]))
}

func TestStreamWeights(t *testing.T) {
	p, err := policy.LoadFile("testdata/least-streams.in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b := p.GetBackends()[0]
	for _, tc := range []struct {
		name   string
		live   map[string]uint64
		drains map[string]DrainPhase
		want   map[string]uint32
	}{
		{"idle: by capacity", nil, nil, map[string]uint32{"127.0.0.1:8081": 500, "127.0.0.1:8083": 500, "127.0.0.1:8085": 1000}},
		{"full keeps 1", map[string]uint64{"127.0.0.1:8081": 200, "127.0.0.1:8083": 300}, nil,
			map[string]uint32{"127.0.0.1:8081": 1, "127.0.0.1:8083": 1, "127.0.0.1:8085": 1000}},
		{"drained left out", map[string]uint64{"127.0.0.1:8081": 100}, map[string]DrainPhase{"127.0.0.1:8085": Drained},
			map[string]uint32{"127.0.0.1:8081": 1, "127.0.0.1:8083": 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := StreamWeights(b, tc.live, tc.drains, 0); !maps.Equal(got, tc.want) {
				t.Errorf("StreamWeights = %v, want %v", got, tc.want)
			}
		})
	}
	p.GetBackends()[0].Lb = policy.LBRoundRobin
	if got := StreamWeights(p.GetBackends()[0], nil, nil, 0); got != nil {
		t.Errorf("round_robin back end got weights %v", got)
	}
}

// golden compares got with file, or writes it with -update.
func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test ./controlplane/translate -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from the translation; run with -update and review the diff.\ngot:\n%s", file, got)
	}
}
