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
		path = buildModule(t)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// buildModule builds the filter exactly as the Makefile does.
func buildModule(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handshake.wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", path, ".")
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the module: %v\n%s", err, out)
	}
	return path
}

// TestModuleExports proves the per-frame promise: the module exports the
// handshake callbacks and nothing that Envoy would call for a body, data,
// trailers, a response or a timer.
func TestModuleExports(t *testing.T) {
	m, err := wasmbin.Parse(moduleBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		// _initialize is how a WASI reactor starts its runtime; Envoy
		// calls it before anything else.
		"_initialize", "memory",
		"proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_vm_start",
		"proxy_on_configure", "proxy_on_context_create", "proxy_on_request_headers",
		"proxy_on_done", "proxy_on_delete",
	} {
		if !slices.Contains(m.Exports, want) {
			t.Errorf("missing export %s (exports: %v)", want, m.Exports)
		}
	}
	for _, name := range m.Exports {
		lower := strings.ToLower(name)
		for _, banned := range []string{"body", "data", "trailers", "metadata", "response_headers", "on_tick", "http_call_response", "new_connection", "queue_ready", "grpc"} {
			if strings.HasPrefix(lower, "proxy_on_") && strings.Contains(lower, banned) {
				t.Errorf("the module exports %s: Envoy would enter the VM after the handshake headers", name)
			}
		}
		// _start would make the module a WASI command: Envoy would run
		// main and the runtime would exit.
		if name == "_start" {
			t.Error("the module exports _start; build it with -buildmode=c-shared")
		}
	}
}

// envoyWASI lists the WASI preview 1 calls Envoy's Wasm host provides, as
// loaded by Envoy 1.40 under envoy.wasm.runtime.v8. A module importing
// anything else fails to load.
var envoyWASI = []string{
	"args_get", "args_sizes_get", "clock_res_get", "clock_time_get",
	"environ_get", "environ_sizes_get", "fd_close", "fd_fdstat_get",
	"fd_fdstat_set_flags", "fd_prestat_dir_name", "fd_prestat_get", "fd_read",
	"fd_seek", "fd_write", "path_filestat_get", "path_open", "poll_oneoff",
	"proc_exit", "random_get", "sched_yield",
}

// TestModuleImports checks that every host function the module needs is a
// Proxy-Wasm call or a WASI call Envoy provides, so that a Go release
// whose runtime imports something new is caught here, not at load time.
func TestModuleImports(t *testing.T) {
	m, err := wasmbin.Parse(moduleBytes(t))
	if err != nil {
		t.Fatal(err)
	}
	proxyCalls := 0
	for _, imp := range m.Imports {
		switch imp.Module {
		case "env":
			if !strings.HasPrefix(imp.Name, "proxy_") {
				t.Errorf("env import %s is not a Proxy-Wasm call", imp.Name)
			}
			proxyCalls++
		case "wasi_snapshot_preview1":
			if !slices.Contains(envoyWASI, imp.Name) {
				t.Errorf("WASI import %s is not provided by Envoy", imp.Name)
			}
		default:
			t.Errorf("import from unexpected module %s.%s", imp.Module, imp.Name)
		}
	}
	if proxyCalls == 0 {
		t.Error("no Proxy-Wasm import: the ABI glue is not linked")
	}
}
