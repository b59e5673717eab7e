package xdstype

import (
	"slices"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// The URLs are written out so that dpctl does not link Envoy's API; this
// holds them to go-control-plane's.
func TestKindsAreGoControlPlaneTypes(t *testing.T) {
	want := []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType, resource.ExtensionConfigType}
	var got []string
	for _, k := range Kinds() {
		got = append(got, k.URL)
	}
	if !slices.Equal(got, want) {
		t.Errorf("Kinds() URLs = %v, want %v", got, want)
	}
}

func TestName(t *testing.T) {
	tests := map[string]string{
		resource.ListenerType:        "Listener",
		resource.EndpointType:        "ClusterLoadAssignment",
		resource.ExtensionConfigType: "TypedExtensionConfig",
		resource.SecretType:          "Secret",
		"":                           "",
	}
	for url, want := range tests {
		if got := Name(url); got != want {
			t.Errorf("Name(%q) = %q, want %q", url, got, want)
		}
	}
}
