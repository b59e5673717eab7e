package e2e

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestPreStopHookCutsNoCall runs the Helm chart's preStop hook, the script
// itself, against a real Envoy holding live calls on its HTTP listener and
// on a tcp-mode listener, as the kubelet runs it before it stops a pod:
// readiness fails at once, the listeners drain and then refuse new
// connections, the live calls go on with no frame lost, and the hook
// returns when the calls have ended, or at its deadline while they still
// run.
func TestPreStopHookCutsNoCall(t *testing.T) {
	script := chartFile(t, "files/prestop.sh")
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	readyAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{readyAddr: readyAddr}, func(p *policyParams) { p.TCP = tcpAddr })
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, code, err := httpGet(ctx, "http://"+readyAddr+"/ready"); code != http.StatusOK {
		t.Fatalf("readiness listener before the hook: %d, %v", code, err)
	}

	const perListener = 2
	st := startStreams(t, validToken(t), perListener, s.listenURL("ws", "/v1/voice"), "ws://"+tcpAddr+"/v1/voice")
	s.waitUpstreams(t, 2*perListener)
	live := fmt.Sprintf("%d live streams", 2*perListener)

	// The deadline case first, while the calls run: the hook gives up, says
	// how many calls its exit leaves to be cut, and cuts none itself.
	start := time.Now()
	out, code := runHook(ctx, t, script, s.envoy.AdminURL(), 1)
	hookTook := time.Since(start)
	if code != 3 || !strings.Contains(out, "deadline of 1s reached with "+live) {
		t.Fatalf("hook with the calls live and a 1 s deadline: exit %d, want 3 naming %q:\n%s", code, live, out)
	}

	// Readiness failed at once, on the admin API and on the listener a
	// kubelet probes.
	if b, code, _ := httpGet(ctx, s.envoy.AdminURL()+"/ready"); code != http.StatusServiceUnavailable || strings.TrimSpace(b) != "DRAINING" {
		t.Errorf("admin /ready after the hook: %d %q, want 503 DRAINING", code, b)
	}
	if _, code, err := httpGet(ctx, "http://"+readyAddr+"/ready"); code == http.StatusOK {
		t.Errorf("readiness listener after the hook: %d, %v; want a failure", code, err)
	}

	// After Envoy's drain time the listeners are closed: a new call is
	// refused on both, never routed.
	hookStarted := time.Now().Add(-hookTook)
	for _, addr := range []string{s.params.Listen, tcpAddr} {
		waitFor(t, time.Minute, func() (bool, string) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err == nil {
				c.Close()
				return false, addr + " still accepts connections"
			}
			return errors.Is(err, syscall.ECONNREFUSED), fmt.Sprintf("dial %s: %v", addr, err)
		})
	}

	t.Logf("listeners refused new connections %v after the hook started (Envoy's drain time: 2 s)", time.Since(hookStarted).Round(10*time.Millisecond))

	// The calls still flow both ways after the listeners closed.
	rx := func() int64 {
		return s.stat(t, "cluster.voice.upstream_cx_rx_bytes_total")
	}
	before := rx()
	waitFor(t, 30*time.Second, func() (bool, string) {
		now := rx()
		return now > before, fmt.Sprintf("voice back end bytes stuck at %d", now)
	})

	// The hook as the kubelet runs it, with a long deadline and Envoy's
	// admin on a Unix socket as in the chart (relayed to this Envoy's
	// admin port): it waits for the calls, and returns once they have
	// ended.
	hook := startHook(t, script, "unix:"+unixRelay(t, s.envoy.AdminURL()), 300)
	waitFor(t, 30*time.Second, func() (bool, string) {
		o := hook.out.String()
		return strings.Count(o, "prestop: "+live) >= 2, "hook output so far: " + o
	})
	select {
	case <-hook.done:
		t.Fatalf("the hook returned while the calls were live:\n%s", hook.out.String())
	default:
	}
	st.end(t) // every frame came back, no call was cut
	ended := time.Now()
	select {
	case err := <-hook.done:
		t.Logf("the hook returned %v after the last call ended (it polls every 0.2 s here)", time.Since(ended).Round(10*time.Millisecond))
		if err != nil || !strings.Contains(hook.out.String(), "prestop: no live streams") {
			t.Fatalf("hook after the calls ended: %v\n%s", err, hook.out.String())
		}
	case <-ctx.Done():
		t.Fatalf("the hook did not return after the calls ended:\n%s", hook.out.String())
	}
	t.Logf("hook output:\n%s", hook.out.String())
}

// chartFile is a file of the Helm chart, by its path in the chart.
func chartFile(t *testing.T, rel string) string {
	t.Helper()
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "deploy", "helm", "directpipe", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func hookCmd(ctx context.Context, script, admin string, deadline int) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "sh", script)
	cmd.Env = append(os.Environ(),
		"ENVOY_ADMIN="+admin,
		fmt.Sprintf("DRAIN_DEADLINE_SECONDS=%d", deadline),
		"DRAIN_POLL_SECONDS=0.2")
	return cmd
}

// runHook runs the hook to its end and returns its output and exit code.
func runHook(ctx context.Context, t *testing.T, script, admin string, deadline int) (string, int) {
	t.Helper()
	out, err := hookCmd(ctx, script, admin, deadline).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		t.Fatalf("running the hook: %v\n%s", err, out)
		return "", 0
	}
}

type runningHook struct {
	out  *syncBuffer
	done chan error
}

// startHook runs the hook in the background; it is killed at the end of
// the test if it is still running.
func startHook(t *testing.T, script, admin string, deadline int) *runningHook {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &runningHook{out: &syncBuffer{}, done: make(chan error, 1)}
	cmd := hookCmd(ctx, script, admin, deadline)
	cmd.Stdout, cmd.Stderr = h.out, h.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { h.done <- cmd.Wait() }()
	t.Cleanup(cancel)
	return h
}

// unixRelay serves a Unix socket that relays each connection to the TCP
// address of url, until the end of the test, and returns its path.
func unixRelay(t *testing.T, url string) string {
	t.Helper()
	target := strings.TrimPrefix(url, "http://")
	path := filepath.Join(t.TempDir(), "admin.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go func() {
					io.Copy(up, c)
					up.Close()
				}()
				io.Copy(c, up)
			}()
		}
	}()
	return path
}

// httpGet returns a GET's body and status.
func httpGet(ctx context.Context, url string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), resp.StatusCode, err
}

// TestCertRotationNeedsNoRestart: with envoy-bootstrap -sds-dir, as the
// Helm chart runs it, Envoy takes its client certificate and CA through
// path-based SDS from a directory laid out as a Kubernetes Secret volume.
// The kubelet's update of that volume (a new ..data link) is picked up by
// the running Envoy: /certs shows the new certificate and CA, and after
// the control plane comes back with certificates of the new CA only, the
// same Envoy process connects to it with the new certificate.
func TestCertRotationNeedsNoRestart(t *testing.T) {
	const node = "edge-rotate"
	oldPKI, newPKI := t.TempDir(), t.TempDir()
	for _, dir := range []string{oldPKI, newPKI} { // two CAs: nothing of the old one works with the new
		if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}, Nodes: []string{node}}); err != nil {
			t.Fatal(err)
		}
	}
	vol := filepath.Join(t.TempDir(), "tls")
	mountSecret(t, vol, oldPKI, node, 1)

	backend := testkit.StartBackend(t)
	policy := policyFile(t, policyParams{
		Listen: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), Voice: backend.VoiceAddr, REST: backend.RESTAddr,
		VoiceEndpoints: []string{backend.VoiceAddr}, Keys: []jwk{devKey()},
	})
	cp := testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: policy, Fleet: &testkit.Fleet{CertDir: oldPKI}})
	xdsAddr := cp.XDSAddr()

	sdsDir := t.TempDir()
	adminPort := testkit.FreePort(t)
	cfg, err := exec.Command(testkit.Binary(t, "envoy-bootstrap"),
		"-node", node, "-cluster", "e2e", "-admin-port", strconv.Itoa(adminPort),
		"-xds-addr", xdsAddr, "-modules-addr", cp.ModulesAddr(),
		"-tls-ca", filepath.Join(vol, "ca.crt"), "-tls-cert", filepath.Join(vol, "tls.crt"), "-tls-key", filepath.Join(vol, "tls.key"),
		"-sds-dir", sdsDir).Output()
	if err != nil {
		t.Fatalf("envoy-bootstrap: %v", err)
	}
	if strings.Contains(string(cfg), filepath.Join(vol, "tls.key")) {
		t.Fatal("the bootstrap names the key file itself, not through SDS")
	}
	e := testkit.StartEnvoyWithConfig(t, cfg, adminPort, 1, 2*time.Second)
	pid := e.PID()

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	serial := func(file string) string {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", c.SerialNumber)
	}
	nodeCert := func(pki string) string { c, _ := certs.Files{Dir: pki}.Node(node); return c }
	caCert := func(pki string) string { c, _ := certs.Files{Dir: pki}.CA(); return c }
	shows := func(pki string) (bool, string) {
		body, _, err := httpGet(ctx, e.AdminURL()+"/certs")
		body = strings.ToLower(body)
		return err == nil && strings.Contains(body, serial(nodeCert(pki))) &&
			strings.Contains(body, serial(caCert(pki))), "/certs: " + body
	}
	if ok, body := shows(oldPKI); !ok {
		t.Fatalf("Envoy does not show the first certificate and CA: %s", body)
	}

	// The kubelet updates the Secret volume.
	mountSecret(t, vol, newPKI, node, 2)
	swapped := time.Now()
	waitFor(t, time.Minute, func() (bool, string) { return shows(newPKI) })
	t.Logf("Envoy showed the new certificate and CA %v after the swap", time.Since(swapped).Round(10*time.Millisecond))
	if ok, _ := shows(oldPKI); ok {
		t.Error("Envoy still shows the old certificate after the rotation")
	}

	// The control plane comes back with the new CA's certificates only:
	// the same Envoy connects to it, so its new certificate was presented
	// and the new CA verified the server.
	cp.Stop()
	stopped := time.Now()
	cp2 := testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: policy, XDSAddr: xdsAddr, Fleet: &testkit.Fleet{CertDir: newPKI}})
	waitFor(t, 2*time.Minute, func() (bool, string) {
		nodes := cp2.XDS().Status().Nodes()
		for _, n := range nodes {
			if n.ID == node && n.Connected {
				return true, ""
			}
		}
		return false, fmt.Sprintf("the Envoy has not connected with its new certificate: %+v", nodes)
	})
	t.Logf("the same Envoy was connected to the new-CA control plane %v after the old one stopped", time.Since(stopped).Round(10*time.Millisecond))
	if e.PID() != pid {
		t.Fatal("Envoy was restarted")
	}
}

// mountSecret lays out dir as the kubelet does a Secret volume (ca.crt,
// tls.crt, tls.key as links into ..data, which links to a generation's
// directory), with the files of node in the PKI directory pki, and swaps
// ..data atomically when the volume already exists.
func mountSecret(t *testing.T, dir, pki, node string, generation int) {
	t.Helper()
	files := certs.Files{Dir: pki}
	ca, _ := files.CA()
	cert, key := files.Node(node)
	gen := fmt.Sprintf("..generation_%d", generation)
	if err := os.MkdirAll(filepath.Join(dir, gen), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, from := range map[string]string{"ca.crt": ca, "tls.crt": cert, "tls.key": key} {
		copyFile(t, from, filepath.Join(dir, gen, name))
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); errors.Is(err, os.ErrNotExist) {
			if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(gen, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
}
