package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
)

// nativeBootstrap takes its one listener from a file (LDS), so a test can
// replace or remove the listener, and with it the module's filter config.
const nativeBootstrap = `admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %[1]d}}
node: {id: "native-e2e", cluster: "e2e"}
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source: {path: %[2]q}
%[3]s`

// nativeListener serves a direct response, body "gen<generation>", through
// the Go dynamic module, so the only thing between the client and Envoy's
// router is our library. Its filter configuration (nativeFilterConfig)
// guards that route with an API key and leaves /ws public.
const nativeListener = `resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: native
  address: {socket_address: {address: 127.0.0.1, port_value: %[1]d}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: native
        upgrade_configs: [{upgrade_type: websocket}]
        route_config:
          virtual_hosts:
          - name: all
            domains: ["*"]
            routes:
            - name: ws
              match: {prefix: "/ws"}
              route: {cluster: upstream}
            - name: guarded
              match: {prefix: "/"}
              direct_response: {status: 200, body: {inline_string: "gen%[2]d"}}
        http_filters:
        - name: directpipe.native
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
            dynamic_module_config:
              name: directpipe_native
              do_not_close: %[4]t
              module: {local: {filename: %[3]q}}
            filter_name: handshake
            filter_config:
              "@type": type.googleapis.com/google.protobuf.StringValue
              value: %[5]q
        - name: envoy.filters.http.router
          typed_config:
            "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`

// nativeEnvoy is an Envoy at 2 workers whose listener runs the Go module.
type nativeEnvoy struct {
	*testkit.Envoy
	lds, module string
	port        int
}

// startNativeEnvoy builds the module and starts Envoy with generation 1 of
// the listener, logging at info level, where the module loader reports the
// ABI comparison and LDS each listener update.
func startNativeEnvoy(t *testing.T, doNotClose bool) *nativeEnvoy {
	t.Helper()
	// The listener always names the cluster; these tests never route to it.
	return startNativeEnvoyWith(t, doNotClose, nativeModule(t), "127.0.0.1:1")
}

// startNativeEnvoyWith is startNativeEnvoy with a given module and with the
// cluster "upstream", which routes under /ws reach, at upstream (host:port).
func startNativeEnvoyWith(t *testing.T, doNotClose bool, module, upstream string) *nativeEnvoy {
	t.Helper()
	if os.Getenv("DIRECTPIPE_ENVOY_LOG") == "" {
		t.Setenv("DIRECTPIPE_ENVOY_LOG", "info")
	}
	n := &nativeEnvoy{module: module, port: testkit.FreePort(t), lds: filepath.Join(t.TempDir(), "lds.yaml")}
	n.setListener(t, 1, doNotClose)
	adminPort := testkit.FreePort(t)
	host, port, err := net.SplitHostPort(upstream)
	if err != nil {
		t.Fatal(err)
	}
	clusters := fmt.Sprintf(nativeUpstream, host, port)
	n.Envoy = testkit.StartEnvoyWithConfig(t, []byte(fmt.Sprintf(nativeBootstrap, adminPort, n.lds, clusters)), adminPort, 2, time.Second)
	return n
}

// nativeUpstream is the bootstrap's cluster for routes under /ws.
const nativeUpstream = `static_resources:
  clusters:
  - name: upstream
    connect_timeout: 5s
    load_assignment:
      cluster_name: upstream
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
`

// setListener writes a generation of the listener, or none for 0.
func (n *nativeEnvoy) setListener(t *testing.T, generation int, doNotClose bool) {
	t.Helper()
	cfg := "resources: []\n"
	if generation > 0 {
		cfg = fmt.Sprintf(nativeListener, n.port, generation, n.module, doNotClose, nativeFilterConfig(t))
	}
	writeAtomic(t, n.lds, []byte(cfg))
}

// get sends one request on a new connection and returns the response and
// its body.
func (n *nativeEnvoy) get(ctx context.Context, t *testing.T, path string) (*http.Response, string) {
	t.Helper()
	return n.getWith(ctx, t, path, "")
}

// getWith is get with an Authorization header, unless it is empty.
func (n *nativeEnvoy) getWith(ctx context.Context, t *testing.T, path, authorization string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
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

// nativeAPIKey is the key nativeFilterConfig accepts.
const nativeAPIKey = "dp_native_key_for_local_testing_only"

// nativeFilterConfig is the handshake filter's configuration, the JSON the
// control plane sends the Wasm plugin: the route "guarded" takes a bearer
// API key, "ws" is public, any other route is refused.
func nativeFilterConfig(t *testing.T) string {
	t.Helper()
	sum := sha256.Sum256([]byte(nativeAPIKey))
	cfg := contract.Config{
		Routes: map[string]string{"ws": "", "guarded": "demo"},
		Policies: map[string]*contract.Policy{"demo": {
			Name: "demo", Realm: "native", Sources: []contract.Source{{Bearer: true}}, MaxTokenBytes: 4096,
			APIKeys: []contract.APIKey{{SHA256: hex.EncodeToString(sum[:]), Identity: "native-client"}},
		}},
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkMarked asserts that the module checked a request for path, which
// the listener of the given generation served: refused without the key,
// let through with it.
func (n *nativeEnvoy) checkMarked(ctx context.Context, t *testing.T, path string, generation int) {
	t.Helper()
	resp, body := n.get(ctx, t, path)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, contract.ReasonMissingToken) ||
		!strings.HasPrefix(resp.Header.Get("www-authenticate"), `Bearer realm="native"`) {
		t.Fatalf("GET %s without a key: status %d, WWW-Authenticate %q, body %q; want the module's 401 missing_token",
			path, resp.StatusCode, resp.Header.Get("www-authenticate"), body)
	}
	resp, body = n.getWith(ctx, t, path, "Bearer "+nativeAPIKey)
	if want := fmt.Sprintf("gen%d", generation); resp.StatusCode != http.StatusOK || body != want {
		t.Fatalf("GET %s with the key: status %d body %q, want 200 %s", path, resp.StatusCode, body, want)
	}
}

// abiMatched is what Envoy's loader logs when the library's ABI version is
// its own.
const abiMatched = "Dynamic module ABI version v0.2.0 matched"

// waitLog waits until Envoy's log, which it writes to its file in batches,
// holds want at least times times, and returns the log.
func (n *nativeEnvoy) waitLog(ctx context.Context, t *testing.T, want string, times int) string {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		log := n.Log()
		if strings.Count(log, want) >= times {
			return log
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Envoy never logged %q %d times; log:\n%s", want, times, log)
		case <-tick.C:
		}
	}
}

// waitListeners waits until Envoy has applied LDS updates updates times and
// has active listeners active listeners and none warming.
func (n *nativeEnvoy) waitListeners(ctx context.Context, t *testing.T, updates, active int64) {
	t.Helper()
	for name, ok := range map[string]func(int64) bool{
		"listener_manager.lds.update_success":      func(v int64) bool { return v >= updates },
		"listener_manager.total_listeners_active":  func(v int64) bool { return v == active },
		"listener_manager.total_listeners_warming": func(v int64) bool { return v == 0 },
	} {
		if err := n.WaitStat(ctx, name, ok); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// nativeModule is the Go dynamic module: $DIRECTPIPE_NATIVE, else built
// from filter/native into the test's temporary directory, so the test
// always runs the source it sits beside.
func nativeModule(t *testing.T, tags ...string) string {
	t.Helper()
	if p := os.Getenv("DIRECTPIPE_NATIVE"); p != "" && len(tags) == 0 {
		return p
	}
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "libdirectpipe_native.so")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-buildmode=c-shared", "-trimpath", "-tags="+strings.Join(tags, ","), "-o", out, "./filter/native")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the native module: %v\n%s", err, b)
	}
	return out
}

// TestNativeModuleLoads proves that Envoy 1.40 loads the handshake filter
// built as a Go c-shared library, accepts its ABI version, and runs the
// gate on every worker: the filter configuration's JSON is parsed, a
// request without a key is answered 401 by the module, one with the key is
// let through, and the module's counters reach Envoy's stats.
func TestNativeModuleLoads(t *testing.T) {
	n := startNativeEnvoy(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.waitListeners(ctx, t, 1, 1)

	// New connections spread over both workers, so each runs Go code.
	const requests = 20
	for i := range requests {
		n.checkMarked(ctx, t, fmt.Sprintf("/stream/%d", i), 1)
	}
	resp, body := n.getWith(ctx, t, "/stream/bad", "Bearer not-the-key")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, contract.ReasonUnknownAPIKey) {
		t.Fatalf("GET with a wrong key: status %d body %q, want 401 %s", resp.StatusCode, body, contract.ReasonUnknownAPIKey)
	}
	for name, want := range map[string]int64{
		nativeStat(contract.MetricAllowed):                                     requests,
		nativeStat(contract.MetricDeniedPrefix + contract.ReasonMissingToken):  requests,
		nativeStat(contract.MetricDeniedPrefix + contract.ReasonUnknownAPIKey): 1,
	} {
		if err := n.WaitStat(ctx, name, func(v int64) bool { return v == want }); err != nil {
			stats, _ := n.Stats(ctx)
			t.Fatalf("%s: %v; stats: %v", name, err, dynamicModuleStats(stats))
		}
	}

	log := n.waitLog(ctx, t, abiMatched, 1)
	if strings.Contains(log, "deprecated") {
		t.Errorf("Envoy warned about the module's ABI version; log:\n%s", log)
	}
}

// dynamicModuleStats are the stats the module defined.
func dynamicModuleStats(all map[string]int64) map[string]int64 {
	out := map[string]int64{}
	for k, v := range all {
		if strings.Contains(k, "directpipe_") {
			out[k] = v
		}
	}
	return out
}

// nativeStat is the name under which Envoy shows a counter the module
// defines.
func nativeStat(name string) string { return httpFilterStat(testkit.FilterNative, name) }

// TestNativeModuleSurvivesConfigUpdates replaces the listener, and with it
// the module's filter config, then removes it and adds it back, all without
// do_not_close: Go's linker marks a c-shared library NODELETE, so Envoy's
// dlclose never unmaps the Go runtime under its own threads. The library is
// loaded, and its ABI checked, once.
func TestNativeModuleSurvivesConfigUpdates(t *testing.T) {
	n := startNativeEnvoy(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n.waitListeners(ctx, t, 1, 1)
	n.checkMarked(ctx, t, "/gen/1", 1)

	updates := int64(1)
	for gen := 2; gen <= 4; gen++ {
		n.setListener(t, gen, false)
		updates++
		n.waitListeners(ctx, t, updates, 1)
		n.checkMarked(ctx, t, fmt.Sprintf("/gen/%d", gen), gen)
	}

	// No listener: the last filter config referring to the library goes.
	n.setListener(t, 0, false)
	updates++
	n.waitListeners(ctx, t, updates, 0)
	n.setListener(t, 5, false)
	updates++
	n.waitListeners(ctx, t, updates, 1)
	n.checkMarked(ctx, t, "/gen/5", 5)

	// Envoy loads the library before it logs the listener's update, so once
	// all five updates are in the log, every load is too.
	log := n.waitLog(ctx, t, "lds: add/update listener 'native'", 5)
	if got := strings.Count(log, "Dynamic module ABI version"); got != 1 {
		t.Errorf("Envoy checked the library's ABI %d times, want once (loaded once, never unloaded); log:\n%s", got, log)
	}
}

// TestNativeModuleLoadFailureKeepsLastGood points the listener at a file
// that is not a shared library: Envoy rejects the update, says why, and the
// last good listener, module included, keeps serving.
func TestNativeModuleLoadFailureKeepsLastGood(t *testing.T) {
	n := startNativeEnvoy(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.waitListeners(ctx, t, 1, 1)
	n.checkMarked(ctx, t, "/before", 1)

	bogus := filepath.Join(t.TempDir(), "libnot_a_module.so")
	if err := os.WriteFile(bogus, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	good := n.module
	n.module = bogus
	n.setListener(t, 2, true)
	n.module = good
	if err := n.WaitStat(ctx, "listener_manager.lds.update_rejected", func(v int64) bool { return v == 1 }); err != nil {
		t.Fatal(err)
	}
	n.waitLog(ctx, t, "Failed to load dynamic module", 1)
	n.checkMarked(ctx, t, "/after", 1)
}

// TestNativeModuleCallsPerFrame measures how often Envoy calls the module on
// an upgraded WebSocket's data path: Envoy requires the body hooks of a
// dynamic-module HTTP filter, so unlike the Wasm module, which registers no
// body callback, it is entered for every chunk a client sends. A build with
// -tags nativeprobe counts the calls and answers /native/body-calls.
func TestNativeModuleCallsPerFrame(t *testing.T) {
	n, ctx := startProbeEnvoy(t)
	calls := func() int {
		t.Helper()
		resp, body := n.get(ctx, t, "/native/body-calls")
		v, err := strconv.Atoi(body)
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("GET /native/body-calls: status %d body %q", resp.StatusCode, body)
		}
		return v
	}
	before := calls()

	conn, br := n.upgradeWS(ctx, t)
	// One chunk at a time, each echoed before the next: Envoy sees each as
	// its own read.
	const frames = 100
	chunk := make([]byte, 160)
	for i := range frames {
		if _, err := conn.Write(chunk); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if _, err := io.ReadFull(br, chunk); err != nil {
			t.Fatalf("frame %d echo: %v", i, err)
		}
	}
	got := calls() - before
	t.Logf("%d chunks on an upgraded WebSocket: %d request-body calls into the module", frames, got)
	if got < frames {
		t.Errorf("%d body calls for %d chunks: Envoy no longer calls the body hook per chunk; revisit docs/filter.md", got, frames)
	}
}

// startProbeEnvoy starts Envoy with the -tags nativeprobe build of the
// module, its public route to a raw echo upstream, and waits for its
// listener; the context bounds the test's waits.
func startProbeEnvoy(t *testing.T) (*nativeEnvoy, context.Context) {
	t.Helper()
	n := startNativeEnvoyWith(t, true, nativeModule(t, "nativeprobe"), startRawEcho(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	n.waitListeners(ctx, t, 1, 1)
	return n, ctx
}

// upgradeWS opens a WebSocket on /ws, the public route, to the raw echo
// upstream; it is closed at the end of the test.
func (n *nativeEnvoy) upgradeWS(ctx context.Context, t *testing.T) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if deadline, ok := ctx.Deadline(); ok {
		conn.SetDeadline(deadline)
	}
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: native\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	return conn, br
}

// TestNativeModulePanicRefusesStream makes the module's Go code panic
// while it checks a request (a -tags nativeprobe build panics on
// /native/panic). A panic that unwound into Envoy would end the process
// and every call on it; the module recovers instead: that request is
// refused 500 internal_error, a WebSocket open through the same Envoy
// keeps carrying frames, and every worker goes on checking handshakes
// (the worker that panicked with a fresh gate).
func TestNativeModulePanicRefusesStream(t *testing.T) {
	n, ctx := startProbeEnvoy(t)

	conn, br := n.upgradeWS(ctx, t)
	echoed := func(what string) {
		t.Helper()
		frame := []byte(what)
		if _, err := conn.Write(frame); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if _, err := io.ReadFull(br, frame); err != nil || string(frame) != what {
			t.Fatalf("%s echoed %q, %v", what, frame, err)
		}
	}
	echoed("before the panic")

	for range 4 {
		resp, body := n.get(ctx, t, "/native/panic")
		if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, contract.ReasonInternal) {
			t.Fatalf("GET /native/panic: status %d body %q, want the module's 500 %s", resp.StatusCode, body, contract.ReasonInternal)
		}
	}
	n.waitLog(ctx, t, "the handshake filter failed", 1)
	// The same Envoy process: the open connection still carries frames.
	echoed("after the panic")
	// New connections spread over both workers.
	for i := range 10 {
		n.checkMarked(ctx, t, fmt.Sprintf("/after/%d", i), 1)
	}
}

// startRawEcho answers any request head with 101 and then echoes bytes: a
// WebSocket upstream for a test that does not look inside frames.
func startRawEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
				io.Copy(c, br)
			}()
		}
	}()
	return ln.Addr().String()
}
