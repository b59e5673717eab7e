//go:build linux

package latencylab

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/envoy/testkit/jwtmint"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// Memory is Envoy's resident memory at one worker count: plain (no Wasm
// filter anywhere) and with the handshake module guarding an HTTP route
// and a tcp mode route.
type Memory struct {
	Workers  int     `json:"workers"`
	PlainMB  float64 `json:"plain_mb"`
	ModuleMB float64 `json:"module_mb"`
	// PlainReady and ModuleReady are the times from Envoy's start to the
	// first allowed handshake on both routes: with the module, that is
	// the xDS push, the module's download from the control plane, its
	// compilation and one instance per worker.
	PlainReady  time.Duration `json:"plain_ready_ns"`
	ModuleReady time.Duration `json:"module_ready_ns"`
	// NativeMB and NativeReady are the same with the native build of the
	// filter (the Envoy dynamic module) guarding the HTTP route, and the
	// tcp route a bare tcp_proxy, as in the plain Envoy: no Wasm at all.
	NativeMB    float64       `json:"native_mb"`
	NativeReady time.Duration `json:"native_ready_ns"`
}

// The Envoys MeasureMemory compares.
const (
	memPlain  = "plain"
	memWasm   = "wasm"
	memNative = "native"
)

// memorySettle is how long Envoy idles before its memory is read: V8
// compiles a module in the background after the configuration is accepted.
const memorySettle = 3 * time.Second

// MeasureMemory starts Envoy once per worker count and configuration and
// reads its resident memory after a handshake on each route.
func MeasureMemory(t testkit.T, b *testkit.Backend, workers []int) ([]Memory, error) {
	var out []Memory
	for _, n := range workers {
		plain, plainReady, err := envoyRSS(t, b, n, memPlain)
		if err != nil {
			return nil, err
		}
		module, moduleReady, err := envoyRSS(t, b, n, memWasm)
		if err != nil {
			return nil, err
		}
		native, nativeReady, err := envoyRSS(t, b, n, memNative)
		if err != nil {
			return nil, err
		}
		out = append(out, Memory{Workers: n, PlainMB: plain, ModuleMB: module, PlainReady: plainReady, ModuleReady: moduleReady,
			NativeMB: native, NativeReady: nativeReady})
	}
	return out, nil
}

// envoyRSS runs one Envoy with a WebSocket route on an HTTP listener and
// a tcp_proxy listener, and returns its RSS in MB once a handshake passed
// on each, and how long after Envoy's start they passed. With the module, directpipe programs it (auth on both routes:
// the module as an HTTP filter and as a network filter); without, a static
// bootstrap has no Wasm anywhere.
func envoyRSS(t testkit.T, b *testkit.Backend, workers int, mode string) (float64, time.Duration, error) {
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	raw := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	start := time.Now()
	var envoy *testkit.Envoy
	if mode != memPlain {
		tcp := `{ address: "%s" }, backend: voice, auth: demo`
		if mode == memNative {
			tcp = `{ address: "%s", raw: true }, backend: voice`
		}
		body := fmt.Sprintf(`listeners:
  - { name: public, address: "%s" }
routes:
  - { name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice, auth: demo }
  - { name: voice-raw, kind: websocket, mode: tcp, tcp: `+tcp+` }
backends:
  - { name: voice, endpoints: ["%s"] }
auth_policies:
  - name: demo
    sources: [{ bearer: true }]
    jwt:
      keys:
        - { kty: oct, kid: %s, alg: HS256, k: %s }
`, listen, raw, b.VoiceAddr, jwtmint.KeyID, jwtmint.Secret)
		file := filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			return 0, 0, err
		}
		opts := testkit.ControlPlaneOptions{PolicyFile: file}
		eopts := testkit.EnvoyOptions{Concurrency: workers, ReadyTimeout: 3 * time.Minute}
		if mode == memNative {
			opts.Filter, eopts.Filter = testkit.FilterNative, testkit.FilterNative
		}
		cp := testkit.StartControlPlane(t, opts)
		defer cp.Stop()
		start = time.Now()
		eopts.XDSAddr = cp.XDSAddr()
		envoy = testkit.StartEnvoy(t, eopts)
	} else {
		admin := testkit.FreePort(t)
		envoy = testkit.StartEnvoyWithConfig(t, plainBootstrap(admin, listen, raw, b.VoiceAddr), admin, workers, time.Second)
	}
	defer envoy.Stop()
	tok, err := jwtmint.Mint(jwtmint.Secret, jwtmint.Claims{Subject: "memory", Expires: time.Now().Add(time.Hour)})
	if err != nil {
		return 0, 0, err
	}
	h := http.Header{"Authorization": {"Bearer " + tok}}
	for _, url := range []string{"ws://" + listen + "/v1/voice", "ws://" + raw + "/v1/voice"} {
		if err := handshakeWithin(url, h, 3*time.Minute); err != nil {
			return 0, 0, fmt.Errorf("%d workers, %s: %w", workers, mode, err)
		}
	}
	loaded := time.Since(start)
	time.Sleep(memorySettle)
	rss, err := envoy.RSSBytes()
	t.Logf("%d workers, %s: both handshakes passed %v after start; %d MB", workers, mode, loaded.Round(time.Millisecond), rss>>20)
	return float64(rss) / (1 << 20), loaded, err
}

// plainBootstrap is Envoy with the same two routes and no Wasm: an
// upgrade chain of the router alone, and a bare tcp_proxy.
func plainBootstrap(admin int, listen, raw, voice string) []byte {
	sock := func(addr string) string {
		host, port, _ := strings.Cut(addr, ":")
		return fmt.Sprintf("{ socket_address: { address: %s, port_value: %s } }", host, port)
	}
	return []byte(fmt.Sprintf(`admin: { address: %s }
static_resources:
  listeners:
    - name: http
      address: %s
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: plain
                upgrade_configs: [{ upgrade_type: websocket }]
                route_config:
                  virtual_hosts:
                    - { name: all, domains: ["*"], routes: [{ match: { prefix: / }, route: { cluster: voice, timeout: 0s } }] }
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
    - name: tcp
      address: %s
      filter_chains:
        - filters:
            - name: envoy.filters.network.tcp_proxy
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
                stat_prefix: tcp
                cluster: voice
  clusters:
    - name: voice
      type: STATIC
      load_assignment:
        cluster_name: voice
        endpoints: [{ lb_endpoints: [{ endpoint: { address: %s } }] }]
# As directpipe's bootstrap does: free memory goes back to the system.
memory_allocator_manager: { bytes_to_release: 33554432, memory_release_interval: 1s }
`, sock(fmt.Sprintf("127.0.0.1:%d", admin)), sock(listen), sock(raw), sock(voice)))
}

// handshakeWithin retries a handshake until it succeeds: routes, listeners
// and filter configs reach Envoy in their own time.
func handshakeWithin(url string, h http.Header, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := voiceprobe.Handshake(context.Background(), url, h)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no handshake on %s after %v: %w", url, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// MemoryMarkdown is the memory table.
func MemoryMarkdown(rows []Memory) string {
	var b strings.Builder
	b.WriteString("| workers | plain Envoy (MB) | with the Wasm module (MB) | Wasm cost (MB) | per worker more than the row before (MB) | with the native module (MB) | native cost (MB) | native vs Wasm cost | start to first handshake, plain / Wasm / native (s) |\n|---|---|---|---|---|---|---|---|---|\n")
	for i, r := range rows {
		perWorker := "–"
		if i > 0 && r.Workers > rows[i-1].Workers {
			prev := rows[i-1]
			perWorker = fmt.Sprintf("%+.1f", ((r.ModuleMB-r.PlainMB)-(prev.ModuleMB-prev.PlainMB))/float64(r.Workers-prev.Workers))
		}
		ratio := "–"
		if r.ModuleMB > r.PlainMB {
			ratio = fmt.Sprintf("%.2f×", (r.NativeMB-r.PlainMB)/(r.ModuleMB-r.PlainMB))
		}
		fmt.Fprintf(&b, "| %d | %.1f | %.1f | %+.1f | %s | %.1f | %+.1f | %s | %.2f / %.2f / %.2f |\n", r.Workers, r.PlainMB, r.ModuleMB, r.ModuleMB-r.PlainMB, perWorker,
			r.NativeMB, r.NativeMB-r.PlainMB, ratio, r.PlainReady.Seconds(), r.ModuleReady.Seconds(), r.NativeReady.Seconds())
	}
	return b.String()
}
