package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/modules"
	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// moduleStats are Envoy's own counters of its downloads from the module
// server: every module fetch is one request on that cluster.
const (
	moduleFetches = "cluster.directpipe_modules.upstream_rq_200"
	moduleBytes   = "cluster.directpipe_modules.upstream_cx_rx_bytes_total"
)

// TestRemoteEnvoyOverMutualTLS runs an Envoy as a remote host would: from
// a directory with no module, its bootstrap from envoy-bootstrap, xDS and
// modules over mutual TLS. It then rotates the key fifty times (no module
// is fetched again) and installs a module whose bytes are corrupted on the
// way (Envoy refuses it, dpctl status says so, and the previous module
// keeps serving).
func TestRemoteEnvoyOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}, Nodes: []string{"edge-1"}}); err != nil {
		t.Fatal(err)
	}
	files := certs.Files{Dir: dir}
	// The module is the control plane's copy: the test upgrades it.
	wasm := filepath.Join(t.TempDir(), "handshake.wasm")
	copyFile(t, testkit.WasmModule(t), wasm)

	s := &stack{t: t, backend: testkit.StartBackend(t)}
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s.params = policyParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: s.backend.VoiceAddr, REST: s.backend.RESTAddr,
		VoiceEndpoints: []string{s.backend.VoiceAddr}, Keys: []jwk{devKey()}, TCP: tcpAddr,
	}
	s.file = policyFile(t, s.params)
	s.cp = testkit.StartControlPlane(t, testkit.ControlPlaneOptions{
		PolicyFile: s.file, AdminToken: adminToken, WasmPath: wasm,
		Fleet: &testkit.Fleet{CertDir: dir},
	})
	// Envoy fetches modules through a server in front of the control
	// plane's module server that can corrupt one module in transit.
	tamper := startTamperingModuleServer(t, s.cp.Modules(), files)

	ca, _ := files.CA()
	cert, key := files.Node("edge-1")
	adminPort := testkit.FreePort(t)
	cfg, err := exec.Command(testkit.Binary(t, "envoy-bootstrap"),
		"-node", "edge-1", "-cluster", "e2e", "-admin-port", strconv.Itoa(adminPort),
		"-xds-addr", s.cp.XDSAddr(), "-modules-addr", tamper.addr,
		"-tls-ca", ca, "-tls-cert", cert, "-tls-key", key).Output()
	if err != nil {
		t.Fatalf("envoy-bootstrap: %v", err)
	}
	if strings.Contains(string(cfg), ".wasm") {
		t.Fatal("the bootstrap names a module file")
	}
	s.envoy = testkit.StartEnvoyWithConfig(t, cfg, adminPort, 2, 2*time.Second)
	if wasm, _ := filepath.Glob(filepath.Join(s.envoy.Dir, "*.wasm")); len(wasm) != 0 || s.envoy.Dir == "" {
		t.Fatalf("Envoy's directory %q holds %v", s.envoy.Dir, wasm)
	}
	ctx := context.Background()
	waitSynced(t, s, 4*time.Minute)
	s.waitStatus("SYNCED", "")

	// Both paths serve an authenticated stream.
	token := validToken(t)
	for _, url := range []string{s.listenURL("ws", "/v1/voice"), "ws://" + tcpAddr + "/v1/voice"} {
		res, err := voiceprobe.Run(ctx, voiceprobe.Config{URL: url, Header: http.Header{"Authorization": {"Bearer " + token}}, Streams: 1, Frames: 20, Interval: 5 * time.Millisecond})
		if err != nil || res.Received != 20 || res.FailedDials != 0 {
			t.Fatalf("%s: %v %+v", url, err, res)
		}
	}
	if resp, _ := upgrade(t, s.listenURL("http", "/v1/voice"), nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d", resp.StatusCode)
	}
	fetches, bytes := stat(t, s.envoy, moduleFetches), stat(t, s.envoy, moduleBytes)
	if fetches != 1 {
		t.Fatalf("Envoy fetched the module %d times, want once", fetches)
	}

	// Fifty key rotations: Envoy fetches nothing again.
	var secret []byte
	for i := range 50 {
		secret = []byte(fmt.Sprintf("rotated-signing-key-number-%04d-32b", i))
		s.params.Keys = []jwk{{Kid: fmt.Sprintf("k%d", i), K: b64url(secret)}}
		s.writePolicy()
		waitVersionMoved(t, s)
	}
	token = mint(t, secret, "k49", jwt.MapClaims{"sub": "caller-50", "exp": time.Now().Add(time.Hour).Unix()})
	eventually(t, func() (bool, string) {
		resp, body := upgrade(t, s.listenURL("http", "/v1/voice"), http.Header{"Authorization": {"Bearer " + token}})
		return resp.StatusCode == http.StatusSwitchingProtocols, fmt.Sprintf("after 50 rotations: %d %s", resp.StatusCode, body)
	})
	if got := stat(t, s.envoy, moduleFetches); got != fetches {
		t.Fatalf("50 rotations made Envoy fetch modules %d more times", got-fetches)
	}
	t.Logf("module bytes Envoy received: %d at start, %d more over 50 key rotations", bytes, stat(t, s.envoy, moduleBytes)-bytes)

	// A new module whose bytes are corrupted in transit never runs.
	stop := make(chan struct{})
	results := make(chan *voiceprobe.Result, 1)
	go func() {
		res, _ := voiceprobe.Run(ctx, voiceprobe.Config{
			URL: s.listenURL("ws", "/v1/voice"), Header: http.Header{"Authorization": {"Bearer " + token}},
			Streams: 2, Frames: 100000, Interval: 20 * time.Millisecond, Stop: stop,
		})
		results <- res
	}()
	waitStreams(t, s, 2)
	upgraded := withCustomSection(t, wasm)
	sum := sha256.Sum256(upgraded)
	tamper.corrupt.Store(hex.EncodeToString(sum[:]))
	if err := os.WriteFile(wasm, upgraded, 0o644); err != nil {
		t.Fatal(err)
	}
	s.cp.Refresh(ctx)
	s.waitStatus("NACKED", "TypedExtensionConfig")
	// Envoy refuses the config first while it downloads the module, then
	// because the download fails its sha256 check; it says neither, the
	// control plane knows the download completed.
	var out string
	waitFor(t, time.Minute, func() (bool, string) {
		_, out, _ = s.dpctl("status")
		return strings.Contains(out, "NACKED") && strings.Contains(out, "Unable to create Wasm plugin directpipe.handshake") &&
			strings.Contains(out, "fails its sha256 check"), "dpctl status does not show the refused module:\n" + out
	})
	t.Logf("dpctl status:\n%s", out)
	// The previous module keeps serving new and open streams.
	if resp, body := upgrade(t, s.listenURL("http", "/v1/voice"), http.Header{"Authorization": {"Bearer " + token}}); resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("a new stream after the refused module: %d %s", resp.StatusCode, body)
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	if res := <-results; res.Disconnects != 0 || res.Lost != 0 || res.FailedDials != 0 {
		t.Errorf("open streams were hurt by the refused module: %+v", res.Streams)
	}
}

// tamperingModuleServer serves the control plane's modules over mutual
// TLS and flips a byte of the one whose sha256 is in corrupt.
type tamperingModuleServer struct {
	addr    string
	corrupt atomic.Value // string
}

func startTamperingModuleServer(t *testing.T, store *modules.Store, files certs.Files) *tamperingModuleServer {
	t.Helper()
	srvCert, srvKey := files.Server()
	ca, _ := files.CA()
	cfg, err := mtls.ServerConfig(mtls.Files{Cert: srvCert, Key: srvKey, ClientCA: ca}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"http/1.1"}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &tamperingModuleServer{addr: lis.Addr().String()}
	ts.corrupt.Store("")
	inner := store.Handler(func(r *http.Request) string { return "edge-1" })
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sha := ts.corrupt.Load().(string); sha != "" && strings.Contains(r.URL.Path, sha) {
			w = &flipLast{ResponseWriter: w}
		}
		inner.ServeHTTP(w, r)
	})}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return ts
}

// flipLast changes the first byte of the body it writes.
type flipLast struct {
	http.ResponseWriter
	done bool
}

func (f *flipLast) Write(b []byte) (int, error) {
	if !f.done && len(b) > 0 {
		f.done = true
		c := append([]byte(nil), b...)
		c[len(c)-1] ^= 0xff
		return f.ResponseWriter.Write(c)
	}
	return f.ResponseWriter.Write(b)
}

// withCustomSection is the module plus a custom section: a valid module
// with another sha256, as a new build would be.
func withCustomSection(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	name := "directpipe-test"
	payload := []byte(time.Now().Format(time.RFC3339Nano))
	body := append(append([]byte{byte(len(name))}, name...), payload...)
	return append(append(b, 0x00, byte(len(body))), body...)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func stat(t *testing.T, e *testkit.Envoy, name string) int64 {
	t.Helper()
	v, err := e.Stat(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitSynced waits, patiently, until the Envoy ACKed every type: the
// first load compiles the module.
func waitSynced(t *testing.T, s *stack, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, func() (bool, string) {
		return synced(s), fmt.Sprintf("not SYNCED: %+v", s.cp.XDS().Status().Nodes())
	})
}
