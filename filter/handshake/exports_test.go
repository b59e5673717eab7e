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

// module is the module built from this tree.
type module struct {
	name string // its file under bin/
	pkg  string // its package, relative to this directory
	env  string // the variable `make test` sets to the built file
}

var handshakeModule = module{"handshake.wasm", ".", "DIRECTPIPE_WASM"}

// path returns the built module: the file `make test` built, otherwise a
// fresh build exactly as the Makefile does it.
func (m module) path(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(m.env); p != "" {
		return p
	}
	path := filepath.Join(t.TempDir(), m.name)
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", path, m.pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", m.name, err, out)
	}
	return path
}

func (m module) bytes(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(m.path(t))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// checkExports fails on a missing export, on any proxy_on_ callback that
// contains a banned word, and on _start (which would make the module a
// WASI command: Envoy would run main and the runtime would exit).
func checkExports(t *testing.T, m module, want, banned []string) {
	t.Helper()
	parsed, err := wasmbin.Parse(m.bytes(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range want {
		if !slices.Contains(parsed.Exports, w) {
			t.Errorf("%s: missing export %s (exports: %v)", m.name, w, parsed.Exports)
		}
	}
	for _, name := range parsed.Exports {
		lower := strings.ToLower(name)
		for _, b := range banned {
			if strings.HasPrefix(lower, "proxy_on_") && strings.Contains(lower, b) {
				t.Errorf("%s exports %s: Envoy would enter the VM for it", m.name, name)
			}
		}
		if name == "_start" {
			t.Errorf("%s exports _start; build it with -buildmode=c-shared", m.name)
		}
	}
}

// commonExports are what every module needs: _initialize is how a WASI
// reactor starts its runtime, and Envoy calls it before anything else.
var commonExports = []string{
	"_initialize", "memory",
	"proxy_abi_version_0_2_1", "proxy_on_memory_allocate", "proxy_on_vm_start",
	"proxy_on_configure", "proxy_on_context_create", "proxy_on_delete",
}

// TestStreamEndOneCall proves from the export list what a stream's end
// costs: of the callbacks Envoy makes when a stream or connection ends
// (proxy_on_done, proxy_on_log, then proxy_on_delete), the module exports
// only proxy_on_delete, where a stream under a quota is given back. The
// whole export list is pinned, so a new callback is a decision.
func TestStreamEndOneCall(t *testing.T) {
	parsed, err := wasmbin.Parse(handshakeModule.bytes(t))
	if err != nil {
		t.Fatal(err)
	}
	var ends []string
	for _, e := range parsed.Exports {
		if e == "proxy_on_done" || e == "proxy_on_log" || e == "proxy_on_delete" {
			ends = append(ends, e)
		}
	}
	if !slices.Equal(ends, []string{"proxy_on_delete"}) {
		t.Errorf("callbacks at a stream's end: %v, want only proxy_on_delete", ends)
	}
	want := append(slices.Clone(commonExports), "proxy_on_request_headers", "proxy_on_new_connection", "proxy_on_downstream_data", "proxy_on_tick")
	got := slices.Clone(parsed.Exports)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("exports %v, want %v", got, want)
	}
	t.Logf("exports: %v", got)
}

// TestModuleExports proves the per-frame promise from the export list:
// the module exports the HTTP filter's request-headers callback and the
// network filter's new-connection, downstream-data and tick callbacks, and
// nothing that Envoy would call for an HTTP body, trailers, metadata or a
// response, nor for the server's side of a tcp connection. (That an HTTP
// stream never enters the network callbacks is Envoy's: an e2e test
// counts the VM's callbacks to prove it.)
func TestModuleExports(t *testing.T) {
	checkExports(t, handshakeModule,
		append(slices.Clone(commonExports), "proxy_on_request_headers", "proxy_on_new_connection", "proxy_on_downstream_data", "proxy_on_tick"),
		[]string{"body", "trailers", "metadata", "response_headers", "upstream", "http_call_response", "queue_ready", "grpc"})
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
	checkImports(t, handshakeModule)
}

func checkImports(t *testing.T, mod module) {
	m, err := wasmbin.Parse(mod.bytes(t))
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
