package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/audit"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// uniqueNativeModule is the dynamic module with random bytes after its
// end, which the loader never reads: a module with a sha256 no Envoy on
// this machine has seen, so Envoy must fetch it (Envoy keeps fetched
// dynamic modules in a file named by their sha256 under /tmp, shared by
// every Envoy on the host).
func uniqueNativeModule(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(nativeModule(t))
	if err != nil {
		t.Fatal(err)
	}
	return writeNativeModule(t, append(data, []byte(rand.Text())...))
}

// writeNativeModule writes a module for one test, and removes Envoy's
// copy of it when the test ends.
func writeNativeModule(t *testing.T, data []byte) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "libdirectpipe_native_test.so")
	if err := os.WriteFile(out, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	t.Cleanup(func() { os.Remove(envoyModuleCache(hex.EncodeToString(sum[:]))) })
	return out
}

// envoyModuleCache is where Envoy 1.40 keeps a fetched dynamic module.
func envoyModuleCache(sha string) string {
	return filepath.Join(os.TempDir(), "envoy_dynamic_module_"+sha+".so")
}

// handshakeConfigFailures is how many times Envoy refused the HTTP
// handshake filter's config.
func handshakeConfigFailures(ctx context.Context, e *testkit.Envoy) (int64, error) {
	stats, err := e.Stats(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for k, v := range stats {
		if strings.HasPrefix(k, "extension_config_discovery.") && strings.HasSuffix(k, "directpipe.handshake.config_fail") {
			n += v
		}
	}
	return n, nil
}

// waitHandshakeConfigFailures waits until Envoy refused the handshake
// filter's config at least n times.
func waitHandshakeConfigFailures(t *testing.T, e *testkit.Envoy, n int64, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	waitFor(t, timeout, func() (bool, string) {
		got, err := handshakeConfigFailures(ctx, e)
		return err == nil && got >= n, fmt.Sprintf("Envoy refused the handshake filter's config %d times, want %d (%v); log:\n%s", got, n, err, e.Log())
	})
}

// unloadableNativeModule is a shared object, of a sha256 of its own,
// that Envoy fetches and checks but cannot load: its ELF header names
// another machine (arm64), so dlopen refuses it and nothing of it stays
// in the process.
func unloadableNativeModule(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(uniqueNativeModule(t))
	if err != nil {
		t.Fatal(err)
	}
	// e_machine, little-endian, at offset 18 of a 64-bit ELF header.
	if binary.LittleEndian.Uint16(data[18:]) != uint16(elf.EM_X86_64) {
		t.Fatalf("the module is not an x86-64 library")
	}
	binary.LittleEndian.PutUint16(data[18:], uint16(elf.EM_AARCH64))
	return writeNativeModule(t, data)
}

// moduleProxy stands between Envoy and the module server, passing Wasm
// modules through and answering for dynamic modules as told: pass, refuse
// (503) or tamper (the right length, one byte changed).
type moduleProxy struct {
	real string
	mode atomic.Value // "pass", "refuse", "tamper"
	// fetches counts the requests for dynamic modules.
	fetches atomic.Int64
	// passed is when the proxy last finished sending a whole dynamic
	// module.
	mu     sync.Mutex
	passed time.Time
}

func startModuleProxy(t *testing.T, mode string) (*moduleProxy, func(string) string) {
	t.Helper()
	p := &moduleProxy{}
	p.mode.Store(mode)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p, func(real string) string { p.real = real; return ln.Addr().String() }
}

func (p *moduleProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	native := strings.HasSuffix(r.URL.Path, ".so")
	mode := p.mode.Load().(string)
	if native {
		defer p.fetches.Add(1)
	}
	if native && mode == "refuse" {
		http.Error(w, "module server down", http.StatusServiceUnavailable)
		return
	}
	resp, err := http.Get("http://" + p.real + r.URL.Path)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	if native && mode == "tamper" && len(body) > 0 {
		body[len(body)/2] ^= 0xff
	}
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
	if native && mode == "pass" && resp.StatusCode == http.StatusOK {
		p.mu.Lock()
		p.passed = time.Now()
		p.mu.Unlock()
	}
}

func (p *moduleProxy) passedAt() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.passed
}

// TestNativeModuleFailsClosed: Envoy documents a remote dynamic module
// that fails to arrive, in warming mode, as fail-open: the filter is left
// out and requests pass. Ours fails closed, and the back end receives
// nothing, whatever goes wrong:
//   - a module that does not arrive, or arrives altered (its sha256 fails),
//     holds the warm-up cluster, so Envoy asks for no listener: it is not
//     ready and no port is open;
//   - a module that arrives but does not load lets the warm-up cluster
//     through; the handshake filter's config, which names it, is refused
//     on every offer, and a filter without config answers every request
//     500 itself.
func TestNativeModuleFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name   string
		proxy  string // "" for none
		module func(*testing.T) string
		// loads: Envoy gets the module's bytes intact, and its listeners.
		loads bool
	}{
		{"module server down", "refuse", uniqueNativeModule, false},
		{"wrong sha256", "tamper", uniqueNativeModule, false},
		{"does not load", "", unloadableNativeModule, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := memberOptions{remote: true, native: tc.module(t)}
			sha := fileSHA256(t, o.native)
			var proxy *moduleProxy
			if tc.proxy != "" {
				proxy, o.modules = startModuleProxy(t, tc.proxy)
			}
			m := launchMember(t, "edge-native-"+strings.ReplaceAll(tc.name, " ", "-"), o)
			if tc.loads {
				// Refused twice: the first offer, and a re-offer once
				// Envoy's background fetch had its chance.
				waitHandshakeConfigFailures(t, m.envoy, 2, time.Minute)
			} else {
				// Two fetches failed: Envoy is retrying in the warm-up.
				waitFor(t, time.Minute, func() (bool, string) {
					return proxy.fetches.Load() >= 2, fmt.Sprintf("%d fetches of the module", proxy.fetches.Load())
				})
			}
			probe := newStartProbe()
			probe.run(t, m.envoy, m.targets, probe.since()+2*time.Second)
			t.Logf("ready at %v; answers %v; refused connections %d", probe.ready, probe.answered, probe.refused)
			if got := m.handshakes(); len(got) != 0 {
				t.Errorf("the back end received %d upgrades without the handshake filter: %+v", len(got), got)
			}
			if !tc.loads {
				if probe.ready != 0 || len(probe.answered) != 0 || len(probe.failures) != 0 || probe.refused == 0 {
					t.Errorf("Envoy was ready (at %v) or answered (%v %v) without its handshake filter", probe.ready, probe.answered, probe.failures)
				}
				if n := stat(t, m.envoy, "listener_manager.total_listeners_active"); n != 0 {
					t.Errorf("%d listeners active without the handshake filter", n)
				}
				return
			}
			// Every answer is Envoy's own 500 for a filter without config;
			// the tcp mode listener, whose network filter has none either,
			// closes every connection unanswered.
			answers := probe.answered["REST"] + probe.answered["upgrade"]
			if answers == 0 {
				t.Fatal("the listener never answered")
			}
			var httpFailures, tcpClosed int
			for _, f := range probe.failures {
				switch {
				case strings.HasPrefix(f, "tcp mode upgrade") && !strings.Contains(f, "ready at"):
					tcpClosed++
				case !strings.Contains(f, ": 500"):
					t.Errorf("a client saw something other than a 500: %s", f)
				default:
					httpFailures++
				}
			}
			if httpFailures != answers {
				t.Errorf("%d of %d answers were not refusals", answers-httpFailures, answers)
			}
			if probe.answered["tcp mode upgrade"] != 0 || tcpClosed == 0 {
				t.Errorf("tcp mode: %d answers, %d connections closed unanswered; want none answered", probe.answered["tcp mode upgrade"], tcpClosed)
			}
			var nack string
			for _, n := range m.cp.XDS().Status().Nodes() {
				for _, ts := range n.Types {
					if ts.LastNack != nil {
						nack += ts.LastNack.Error + "\n"
					}
				}
			}
			if !strings.Contains(nack, sha) {
				t.Errorf("the control plane recorded no NACK naming module %s: %s", sha, nack)
			}
			t.Logf("NACK: %s", strings.TrimSpace(nack))
		})
	}
}

// TestNativeModuleArrival starts an Envoy whose dynamic module the module
// server refuses at first: Envoy retries in the warm-up cluster, asks for
// no listener and opens no port; once the module can be fetched, the
// listeners come and open with the filter loaded. It reports the time
// from the module's arrival (the last byte sent to Envoy) to the first
// stream accepted.
func TestNativeModuleArrival(t *testing.T) {
	// Envoy logs its check of the module's ABI at info.
	t.Setenv("DIRECTPIPE_ENVOY_LOG", "info")
	proxy, modules := startModuleProxy(t, "refuse")
	m := launchMember(t, "edge-native-arrival", memberOptions{remote: true, native: uniqueNativeModule(t), modules: modules, noTCP: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	waitFor(t, time.Minute, func() (bool, string) {
		return proxy.fetches.Load() >= 1, "Envoy never asked for the module"
	})
	proxy.mode.Store("pass")
	upgrade := m.targets[1]
	var accepted time.Time
	for accepted.IsZero() {
		if ctx.Err() != nil {
			t.Fatalf("no stream accepted after the module became available; log:\n%s", m.envoy.Log())
		}
		status, err := upgradeStatus(ctx, upgrade)
		switch {
		case err == nil && status == upgrade.want:
			accepted = time.Now()
		case err == nil:
			t.Fatalf("the upgrade answered %d", status)
		case !errors.Is(err, syscall.ECONNREFUSED):
			t.Fatalf("the upgrade failed: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	arrived := proxy.passedAt()
	if arrived.IsZero() {
		t.Fatal("the module passed the proxy but the proxy did not record it")
	}
	t.Logf("module arrival to first accepted stream: %v", accepted.Sub(arrived).Round(time.Millisecond))
	dump, err := m.envoy.ConfigDump(ctx, "ecds_filters")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(dump, []byte("DynamicModuleFilter")) {
		t.Errorf("the handshake filter is not the dynamic module:\n%s", dump)
	}
	// Envoy writes its log to the file in batches.
	waitFor(t, 30*time.Second, func() (bool, string) {
		return strings.Contains(m.envoy.Log(), abiMatched), "Envoy never logged the module's ABI check"
	})
}

// upgradeStatus sends tg once on a new connection.
func upgradeStatus(ctx context.Context, tg target) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tg.url, nil)
	if err != nil {
		return 0, err
	}
	for k, v := range tg.header {
		req.Header[k] = v
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", tg.name, err)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func fileSHA256(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// TestAuditReadsDynamicModule audits a live Envoy whose route runs the Go
// dynamic module from a file: the audit reads the library's dynamic
// symbols and reports that Envoy calls its body hooks for every chunk of
// an upgraded stream (TestNativeModuleCallsPerFrame counts the calls).
func TestAuditReadsDynamicModule(t *testing.T) {
	n := startNativeEnvoy(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.waitListeners(ctx, t, 1, 1)
	in, err := audit.Fetch(ctx, &http.Client{}, n.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	in.ReadFile = audit.ReadFile
	rep, err := audit.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, f := range rep.Findings {
		if strings.HasPrefix(f.Check, "dynamic-module") {
			found = append(found, f.Check+": "+f.Found)
		}
	}
	want := "dynamic-module-sees-every-chunk: the dynamic module HTTP filter directpipe.native (" + n.module +
		") exports envoy_dynamic_module_on_http_filter_request_body, envoy_dynamic_module_on_http_filter_response_body"
	if len(found) != 1 || found[0] != want {
		t.Errorf("dynamic-module findings:\n%s\nwant:\n%s", strings.Join(found, "\n"), want)
	}
}

// TestNativeModuleSignals: the Go runtime, loaded into Envoy, adds its own
// handlers for SIGPIPE and SIGURG (goroutine preemption) and leaves
// Envoy's in place; Envoy still reopens its logs on SIGUSR1 and shrugs
// off SIGHUP, serving through the module after both.
func TestNativeModuleSignals(t *testing.T) {
	n := startNativeEnvoy(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.waitListeners(ctx, t, 1, 1)
	// Whatever the module decides for a request, Envoy answers it.
	answers := func(path string) {
		t.Helper()
		if resp, body := n.get(ctx, t, path); resp.StatusCode >= 500 {
			t.Fatalf("GET %s: %d %q", path, resp.StatusCode, body)
		}
	}
	answers("/before")
	caught := caughtSignals(t, n.PID())
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGSEGV, syscall.SIGPIPE, syscall.SIGURG} {
		if !caught[sig] {
			t.Errorf("no handler for %v in Envoy with the Go module", sig)
		}
	}
	for _, sig := range []syscall.Signal{syscall.SIGUSR1, syscall.SIGHUP} {
		if err := syscall.Kill(n.PID(), sig); err != nil {
			t.Fatal(err)
		}
		answers("/after-" + strings.ReplaceAll(sig.String(), " ", "-"))
	}
}

// caughtSignals reads the signals a process has handlers for (SigCgt).
func caughtSignals(t *testing.T, pid int) map[syscall.Signal]bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		field, ok := strings.CutPrefix(line, "SigCgt:")
		if !ok {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(field), 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		out := map[syscall.Signal]bool{}
		for i := range 64 {
			if mask&(1<<i) != 0 {
				out[syscall.Signal(i+1)] = true
			}
		}
		return out
	}
	t.Fatal("no SigCgt line")
	return nil
}

// TestNativeModuleRollout installs a new dynamic module while two
// streams run and handshakes arrive every 25 ms: Envoy loads the new
// module in a warm-up cluster first, and the handshake filter names it
// only once it has. No handshake fails and no open stream loses a frame
// on the way, Envoy refuses no filter config, and the rollout leaves no
// NACK (in the control plane's status and in `dpctl status`) and no
// critical line behind. It runs over SotW and delta xDS: each
// acknowledges the cluster update only once the warm-up cluster warmed.
func TestNativeModuleRollout(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) { nativeRollout(t, delta) })
	}
}

func nativeRollout(t *testing.T, delta bool) {
	native := uniqueNativeModule(t)
	m := launchMember(t, "edge-native-rollout", memberOptions{remote: true, delta: delta, native: native, noTCP: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := m.envoy.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	waitSynced(t, m.stack, time.Minute)
	refusedBefore, err := handshakeConfigFailures(ctx, m.envoy)
	if err != nil {
		t.Fatal(err)
	}
	fetchesBefore := stat(t, m.envoy, moduleFetches)

	finishStreams := runVoiceProbe(ctx, t, m.listenURL("ws", "/v1/voice"), 2)
	defer finishStreams()
	waitStreams(t, m.stack, 2)

	next := fileSHA256(t, writeNext(t, native))
	probe := newStartProbe()
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			for _, tg := range m.targets {
				probe.send(tg)
			}
		}
	}()
	waitFor(t, time.Minute, func() (bool, string) {
		return answeredTotal(probe) >= len(m.targets), "no handshakes before the rollout"
	})
	start := time.Now()
	m.cp.Refresh(ctx)
	// The control plane's Resources are the Wasm nodes'; Envoy says what
	// it runs.
	waitFor(t, 2*time.Minute, func() (bool, string) {
		dump, err := m.envoy.ConfigDump(ctx, "ecds_filters")
		return err == nil && strings.Contains(string(dump), next) && synced(m.stack), "Envoy does not run the new module yet"
	})
	t.Logf("the handshake filter named the new module %v after the control plane read it", time.Since(start).Round(time.Millisecond))
	// Handshakes on the new module, then the streams end.
	seen := answeredTotal(probe)
	waitFor(t, time.Minute, func() (bool, string) {
		return answeredTotal(probe) >= seen+2*len(m.targets), "no handshakes after the rollout"
	})
	close(stop)
	<-done
	switch res := finishStreams(); {
	case res == nil:
		t.Error("the streams gave no result")
	case res.Disconnects != 0 || res.Lost != 0 || res.FailedDials != 0:
		t.Errorf("open streams were hurt by the rollout: %+v", res.Streams)
	}
	t.Logf("handshakes during the rollout: %v", probe.answered)
	for _, f := range probe.failures {
		t.Errorf("a client during the rollout saw: %s", f)
	}
	if refused, err := handshakeConfigFailures(ctx, m.envoy); err != nil || refused != refusedBefore {
		t.Errorf("Envoy refused the handshake filter's config %d times during the rollout (%v)", refused-refusedBefore, err)
	}
	if got := stat(t, m.envoy, moduleFetches) - fetchesBefore; got != 1 {
		t.Errorf("Envoy fetched modules %d times during the rollout, want 1", got)
	}
	m.assertClean(t)
	if _, out, _ := m.dpctl("status"); strings.Contains(out, "NACKED") || strings.Contains(out, "rejected") {
		t.Errorf("dpctl status shows a refusal after the rollout:\n%s", out)
	}
	if got := nodeFilter(t, m.stack, "edge-native-rollout"); got != "native" {
		t.Errorf("dpctl status says the node runs the %q filter, want native", got)
	}
}

// nodeFilter is the filter build `dpctl status` gives for node id.
func nodeFilter(t *testing.T, s *stack, id string) string {
	t.Helper()
	code, out, errs := s.dpctl("-o", "json", "status")
	var status struct {
		Nodes []struct{ ID, Filter string }
	}
	if err := json.Unmarshal([]byte(out), &status); code != 0 || err != nil {
		t.Fatalf("dpctl -o json status: exit %d, %v: %s%s", code, err, out, errs)
	}
	for _, n := range status.Nodes {
		if n.ID == id {
			return n.Filter
		}
	}
	t.Fatalf("dpctl status lists no node %q:\n%s", id, out)
	return ""
}

// answeredTotal is how many requests probe has had answered so far.
func answeredTotal(p *startProbe) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range p.answered {
		n += c
	}
	return n
}

// writeNext replaces the module file the control plane reads with another
// build (other trailing bytes), and returns its path.
func writeNext(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data = append(data, []byte(rand.Text())...)
	sum := sha256.Sum256(data)
	t.Cleanup(func() { os.Remove(envoyModuleCache(hex.EncodeToString(sum[:]))) })
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// hotRestartBootstrap serves a direct response behind the Go module on
// one static listener.
const hotRestartBootstrap = `admin:
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
                direct_response: {status: 200, body: {inline_string: "epoch%[4]d"}}
          http_filters:
          - name: directpipe.native
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
              dynamic_module_config:
                do_not_close: true
                module: {local: {filename: %[3]q}}
              filter_name: directpipe.handshake
              # No policies: the module lets this route's requests through.
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{"policies":{}}'
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`

// TestNativeModuleHotRestart restarts an Envoy running the Go module the
// way Envoy's hot restart does (--restart-epoch 1, same base id): the new
// process loads the library itself and serves through it on the same
// port, on each of its 4 workers, and the old one exits cleanly after its
// parent shutdown time.
func TestNativeModuleHotRestart(t *testing.T) {
	bin, err := testkit.EnvoyBinary()
	if err != nil {
		t.Fatal(err)
	}
	module := nativeModule(t)
	dir := t.TempDir()
	port := testkit.FreePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := testkit.FreePort(t)
	start := func(epoch int, baseID string) (*exec.Cmd, *bytes.Buffer) {
		cfg := filepath.Join(dir, fmt.Sprintf("epoch%d.yaml", epoch))
		adminPort := testkit.FreePort(t)
		if epoch == 1 {
			adminPort = admin
		}
		if err := os.WriteFile(cfg, []byte(fmt.Sprintf(hotRestartBootstrap, adminPort, port, module, epoch)), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"-c", cfg, "--concurrency", "4", "-l", "info", "--drain-time-s", "1", "--parent-shutdown-time-s", "2",
			"--restart-epoch", strconv.Itoa(epoch)}
		if epoch == 0 {
			args = append(args, "--use-dynamic-base-id", "--base-id-path", filepath.Join(dir, "base-id"))
		} else {
			args = append(args, "--base-id", baseID)
		}
		cmd := exec.Command(bin, args...)
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, &log
	}
	// serves waits until the listener answers with want, on a new
	// connection each time.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	serves := func(want string) {
		t.Helper()
		waitFor(t, 30*time.Second, func() (bool, string) {
			resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
			if err != nil {
				return false, err.Error()
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK && string(b) == want, fmt.Sprintf("%d %q, want %q", resp.StatusCode, b, want)
		})
	}
	old, _ := start(0, "")
	serves("epoch0")
	id, err := os.ReadFile(filepath.Join(dir, "base-id"))
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- old.Wait() }()
	next, log := start(1, strings.TrimSpace(string(id)))
	serves("epoch1")
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("epoch 0 exited: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("epoch 0 did not exit after its parent shutdown time")
	}
	serves("epoch1")
	// New connections spread over the workers; each runs the module.
	for range 40 {
		serves("epoch1")
	}
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/stats?filter=worker_[0-9]+.downstream_cx_total", admin))
	if err != nil {
		t.Fatal(err)
	}
	stats, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for w := range 4 {
		if !regexp.MustCompile(fmt.Sprintf(`worker_%d\.downstream_cx_total: [1-9]`, w)).Match(stats) {
			t.Errorf("worker %d took no connection:\n%s", w, stats)
		}
	}
	if err := next.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := next.Wait(); err != nil {
		t.Errorf("epoch 1 exited on SIGTERM: %v", err)
	}
	if got := strings.Count(log.String(), abiMatched); got != 1 {
		t.Errorf("epoch 1 checked the module's ABI %d times, want once; log:\n%s", got, log.String())
	}
}
