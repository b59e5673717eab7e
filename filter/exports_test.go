//go:build !wasip1

package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/filter/wasmbin"
)

// moduleBytes returns the built module: $DIRECTPIPE_WASM when `make test`
// built it, otherwise a fresh build.
func moduleBytes(t *testing.T) []byte {
	t.Helper()
	path := os.Getenv("DIRECTPIPE_WASM")
	if path == "" {
		path = filepath.Join(t.TempDir(), "handshake.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", path, ".")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the module: %v\n%s", err, out)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestModuleExports proves the per-frame promise: the module exports the
// handshake callbacks and nothing that Envoy would call for body, data or
// trailers.
func TestModuleExports(t *testing.T) {
	m, err := wasmbin.Parse(moduleBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_vm_start",
		"proxy_on_configure", "proxy_on_context_create", "proxy_on_request_headers",
		"proxy_on_done", "proxy_on_delete", "_initialize",
	} {
		if !slices.Contains(m.Exports, want) {
			t.Errorf("missing export %s (exports: %v)", want, m.Exports)
		}
	}
	for _, name := range m.Exports {
		lower := strings.ToLower(name)
		for _, banned := range []string{"body", "data", "trailers", "response_headers", "on_tick", "http_call_response"} {
			if strings.HasPrefix(lower, "proxy_on_") && strings.Contains(lower, banned) {
				t.Errorf("the module exports %s: Envoy would call it per frame or per response", name)
			}
		}
	}
}

// TestModuleImports checks that the host functions the module needs are
// all Proxy-Wasm calls or WASI, nothing Envoy would fail to link.
func TestModuleImports(t *testing.T) {
	m, err := wasmbin.Parse(moduleBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range m.Imports {
		switch imp.Module {
		case "env":
			if !strings.HasPrefix(imp.Name, "proxy_") {
				t.Errorf("env import %s is not a Proxy-Wasm call", imp.Name)
			}
		case "wasi_snapshot_preview1":
		default:
			t.Errorf("import from unexpected module %s.%s", imp.Module, imp.Name)
		}
	}
}
