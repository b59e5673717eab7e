package bootstrap

import (
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestRender(t *testing.T) {
	for _, delta := range []bool{false, true} {
		out, err := Render(Params{NodeID: "n", Cluster: "c", AdminPort: 9901, XDSPort: 18000, Delta: delta})
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		if err := yaml.Unmarshal(out, &v); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, out)
		}
		want := "api_type: GRPC"
		if delta {
			want = "api_type: DELTA_GRPC"
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("delta=%v: %q missing", delta, want)
		}
	}
	if _, err := Render(Params{}); err == nil {
		t.Error("empty params accepted")
	}
}
