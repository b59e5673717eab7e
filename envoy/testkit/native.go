package testkit

import "os"

// FilterBuild is which build of the handshake filter an Envoy runs on its
// HTTP listener: the suites run against each. Its values are the ones a
// node names in its metadata (bootstrap.FilterWasm, bootstrap.FilterNative).
type FilterBuild string

const (
	// FilterWasm is the Proxy-Wasm module: the default.
	FilterWasm FilterBuild = "wasm"
	// FilterNative is the Envoy dynamic module (bin/libdirectpipe_native.so),
	// served by the control plane by ECDS, for the HTTP filter; tcp mode
	// routes keep the Wasm network filter.
	FilterNative FilterBuild = "native"
)

// FilterBuilds are the builds a matrix test runs.
var FilterBuilds = []FilterBuild{FilterWasm, FilterNative}

// NativeModule is the handshake filter as a dynamic module:
// $DIRECTPIPE_NATIVE, else bin/.
func NativeModule(t T) string {
	t.Helper()
	if p := os.Getenv("DIRECTPIPE_NATIVE"); p != "" {
		return p
	}
	return Binary(t, "libdirectpipe_native.so")
}
