package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// nativeBootstrap serves a direct response through the Go dynamic module, so
// the only thing between the client and Envoy's router is our library.
const nativeBootstrap = `admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %[1]d}}
static_resources:
  listeners:
  - name: native
    address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: native
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
          http_filters:
          - name: directpipe.native
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config:
                name: directpipe_native
                # The Go runtime cannot be unloaded from a process.
                do_not_close: true
                module: {local: {filename: %[3]q}}
              filter_name: handshake
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`

// nativeModule is the Go dynamic module: $DIRECTPIPE_NATIVE, else built
// from filter/native into the test's temporary directory, so the test
// always runs the source it sits beside.
func nativeModule(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DIRECTPIPE_NATIVE"); p != "" {
		return p
	}
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "libdirectpipe_native.so")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-buildmode=c-shared", "-trimpath", "-o", out, "./filter/native")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the native module: %v\n%s", err, b)
	}
	return out
}

// TestNativeModuleLoads proves that Envoy 1.40 loads a Go c-shared library
// as an HTTP dynamic module, accepts its ABI version, and calls into Go on
// every stream on every worker, and that the pieces of the ABI a handshake
// filter needs work from Go: reading request headers, per-stream state, a
// local reply, and response headers.
func TestNativeModuleLoads(t *testing.T) {
	// The loader reports the ABI comparison at info level only.
	t.Setenv("DIRECTPIPE_ENVOY_LOG", "dynamic_modules:info")
	module := nativeModule(t)
	adminPort, listenPort := testkit.FreePort(t), testkit.FreePort(t)
	cfg := fmt.Sprintf(nativeBootstrap, adminPort, listenPort, module)
	e := testkit.StartEnvoyWithConfig(t, []byte(cfg), adminPort, 2, time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", listenPort, path), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: read body: %v", path, err)
		}
		return resp, string(body)
	}

	// New connections spread over both workers, so each runs Go code; each
	// request's own path coming back shows the state is per stream.
	const requests = 20
	for i := range requests {
		path := fmt.Sprintf("/stream/%d", i)
		resp, body := get(path)
		if resp.StatusCode != http.StatusOK || body != "ok" {
			t.Fatalf("GET %s: status %d body %q, want 200 ok", path, resp.StatusCode, body)
		}
		if got := resp.Header.Get("x-directpipe-native"); got != "go-c-shared" {
			t.Fatalf("GET %s: x-directpipe-native = %q, want go-c-shared: the module did not act", path, got)
		}
		if got := resp.Header.Get("x-directpipe-native-path"); got != path {
			t.Fatalf("GET %s: the module read the path as %q", path, got)
		}
	}

	// The module answers this path itself, before the route's response.
	resp, body := get("/native/deny")
	if resp.StatusCode != http.StatusForbidden || body != "denied by the native module\n" || resp.Header.Get("x-directpipe-native") != "denied" {
		t.Fatalf("GET /native/deny: status %d, header %q, body %q; want the module's 403", resp.StatusCode, resp.Header.Get("x-directpipe-native"), body)
	}
	if err := e.WaitStat(ctx, "http.native.downstream_rq_2xx", func(v int64) bool { return v >= requests }); err != nil {
		t.Fatal(err)
	}
	if err := e.WaitStat(ctx, "http.native.downstream_rq_4xx", func(v int64) bool { return v == 1 }); err != nil {
		t.Fatal(err)
	}

	log := e.Log()
	if !strings.Contains(log, "Dynamic module ABI version v0.2.0 matched") {
		t.Errorf("Envoy did not report a matching ABI version; log:\n%s", log)
	}
	if strings.Contains(log, "deprecated") {
		t.Errorf("Envoy warned about the module's ABI version; log:\n%s", log)
	}
}
