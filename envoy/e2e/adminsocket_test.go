package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/dpctl"
	"github.com/directpipe/directpipe/envoy/bootstrap"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestEnvoyAdminOnUnixSocket: the bootstrap envoy-bootstrap writes by
// default puts Envoy's admin on a Unix socket only its user may open
// (mode 0600), reports it to the control plane in the node metadata, and
// `dpctl audit --envoy-admin unix:PATH` reads Envoy's config through it.
func TestEnvoyAdminOnUnixSocket(t *testing.T) {
	backend := testkit.StartBackend(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.yaml")
	policy := fmt.Sprintf(`listeners: [{ name: public, address: %q }]
routes: [{ name: api, match: { prefix: /api/ }, kind: http, backend: rest }]
backends: [{ name: rest, endpoints: [%q] }]
`, listen, backend.RESTAddr)
	if err := os.WriteFile(file, []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	cp := testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: file})
	host, port, _ := net.SplitHostPort(cp.XDSAddr())
	xdsPort := 0
	fmt.Sscan(port, &xdsPort)
	sock := filepath.Join(dir, "admin.sock")
	cfg, err := bootstrap.Render(bootstrap.Params{NodeID: "socket-admin", Cluster: "e2e", AdminSocket: sock, XDSHost: host, XDSPort: xdsPort})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "envoy.yaml"), cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	bin, err := testkit.EnvoyBinary()
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "envoy.yaml"), "--use-dynamic-base-id", "--concurrency", "1", "-l", "warning")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("envoy output:\n%s", log.String())
		}
	})

	admin := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	ready := func() bool {
		resp, err := admin.Get("http://envoy-admin/ready")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && strings.TrimSpace(string(b)) == "LIVE"
	}
	// Polls Envoy's own readiness, as testkit.WaitReady does over TCP.
	for deadline := time.Now().Add(2 * time.Minute); !ready(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("Envoy's admin socket never said LIVE")
		}
	}
	if got := plainGet(t, "http://"+listen+"/api/health", nil); got != http.StatusOK {
		t.Fatalf("REST through Envoy: %d", got)
	}

	info, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode()&os.ModeSocket == 0 || info.Mode().Perm() != 0o600 {
		t.Errorf("admin socket mode %v, want a socket with 0600", info.Mode())
	}
	var reported string
	for _, n := range cp.Status().Nodes() {
		if n.ID == "socket-admin" {
			reported = n.Admin
		}
	}
	if reported != "unix:"+sock {
		t.Errorf("the node reports admin %q, want unix:%s", reported, sock)
	}

	var out, errs bytes.Buffer
	code := dpctl.Run(context.Background(), []string{"audit", "--envoy-admin", "unix:" + sock}, &out, &errs)
	// The version line comes from /server_info, the table from
	// /config_dump: both were read through the socket.
	if code != 0 || !strings.Contains(out.String(), "Envoy ") || !strings.Contains(out.String(), "findings") {
		t.Fatalf("dpctl audit over the socket: exit %d\n%s%s", code, out.String(), errs.String())
	}
	out.Reset()
	errs.Reset()
	if code := dpctl.Run(context.Background(), []string{"audit", "--envoy-admin", "unix:" + sock + ".missing"}, &out, &errs); code != 1 {
		t.Errorf("dpctl audit of a missing socket: exit %d, want 1", code)
	}
}
