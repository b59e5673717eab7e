package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestCARotationNeedsNoRestart rotates the CA of a running fleet, both
// sides, while a call runs through an Envoy, and restarts nothing: the
// control plane first trusts the old and the new CA, then presents a
// certificate of the new one (written file by file: the moment its
// certificate and key do not match is refused, and the old pair keeps
// serving), the Envoy takes its new certificate by path-based SDS, and the
// control plane drops the old CA. Then a new Envoy holding only the new
// CA's files syncs and gets the module, a client of the old CA is turned
// away, the first Envoy never reconnected, and its call lost no frame.
func TestCARotationNeedsNoRestart(t *testing.T) {
	nodes := []string{"edge-rot-a", "edge-rot-b"}
	oldPKI, newPKI := t.TempDir(), t.TempDir()
	for _, dir := range []string{oldPKI, newPKI} {
		if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}, Nodes: nodes}); err != nil {
			t.Fatal(err)
		}
	}
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	oldCA, _ := certs.Files{Dir: oldPKI}.CA()
	newCA, _ := certs.Files{Dir: newPKI}.CA()

	// The control plane's files, in certs.Generate's layout, replaced one
	// file at a time as an operator's script or a renewal tool does.
	cpDir := t.TempDir()
	cp := certs.Files{Dir: cpDir}
	cpCert, cpKey := cp.Server()
	cpCA, _ := cp.CA()
	put := func(to, from string, extra ...string) {
		b := read(from)
		for _, e := range extra {
			b = append(b, read(e)...)
		}
		tmp := to + ".tmp"
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, to); err != nil {
			t.Fatal(err)
		}
	}
	oldSrvCert, oldSrvKey := certs.Files{Dir: oldPKI}.Server()
	newSrvCert, newSrvKey := certs.Files{Dir: newPKI}.Server()
	put(cpCert, oldSrvCert)
	put(cpKey, oldSrvKey)
	put(cpCA, oldCA)

	backend := testkit.StartBackend(t)
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	policy := policyFile(t, policyParams{
		Listen: listen, Voice: backend.VoiceAddr, REST: backend.RESTAddr,
		VoiceEndpoints: []string{backend.VoiceAddr}, Keys: []jwk{devKey()},
	})
	cpLog := &syncBuffer{}
	plane := testkit.StartControlPlane(t, testkit.ControlPlaneOptions{PolicyFile: policy, Fleet: &testkit.Fleet{CertDir: cpDir}, Log: cpLog})

	// startEdge runs envoy-bootstrap and Envoy as the Helm chart does, with
	// the node's certificate in a Secret volume read by path-based SDS.
	startEdge := func(node, pki string) (*testkit.Envoy, string) {
		vol := filepath.Join(t.TempDir(), "tls")
		mountSecret(t, vol, pki, node, 1)
		adminPort := testkit.FreePort(t)
		cfg, err := exec.Command(testkit.Binary(t, "envoy-bootstrap"),
			"-node", node, "-cluster", "e2e", "-admin-port", strconv.Itoa(adminPort),
			"-xds-addr", plane.XDSAddr(), "-modules-addr", plane.ModulesAddr(),
			"-tls-ca", filepath.Join(vol, "ca.crt"), "-tls-cert", filepath.Join(vol, "tls.crt"), "-tls-key", filepath.Join(vol, "tls.key"),
			"-sds-dir", t.TempDir()).Output()
		if err != nil {
			t.Fatalf("envoy-bootstrap: %v", err)
		}
		return testkit.StartEnvoyWithConfig(t, cfg, adminPort, 1, 2*time.Second), vol
	}
	edgeA, volA := startEdge(nodes[0], oldPKI)
	pidA := edgeA.PID()
	since := func(node string) (time.Time, bool) {
		for _, n := range plane.XDS().Status().Nodes() {
			if n.ID == node && n.Connected {
				return n.ConnectedSince, true
			}
		}
		return time.Time{}, false
	}
	connectedA, ok := since(nodes[0])
	if !ok {
		t.Fatalf("%s is not connected", nodes[0])
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const calls = 2
	st := startStreams(t, validToken(t), calls, "ws://"+listen+"/v1/voice")
	if err := edgeA.WaitStat(ctx, "cluster.voice.upstream_cx_active", func(v int64) bool { return v >= calls }); err != nil {
		t.Fatal(err)
	}

	// probe is a new xDS client of the control plane holding node's
	// certificate from pki and trusting the CA file roots; it returns the
	// serial of the certificate the server presented. TLS 1.2 makes the
	// server's verdict on the client certificate part of the handshake.
	probe := func(pki, roots string) (string, error) {
		cert, key := certs.Files{Dir: pki}.Node(nodes[1])
		cfg, err := mtls.ClientConfig(cert, key, roots, certs.ServerName)
		if err != nil {
			t.Fatal(err)
		}
		cfg.MaxVersion = tls.VersionTLS12
		d := &tls.Dialer{Config: cfg}
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		defer dcancel()
		c, err := d.DialContext(dctx, "tcp", plane.XDSAddr())
		if err != nil {
			return "", err
		}
		defer c.Close()
		return fmt.Sprintf("%x", c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber), nil
	}
	serialOf := func(file string) string {
		blk, _ := pem.Decode(read(file))
		if blk == nil {
			t.Fatalf("%s holds no PEM block", file)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%x", c.SerialNumber)
	}
	serves := func(pki, roots, want string) func() (bool, string) {
		return func() (bool, string) {
			got, err := probe(pki, roots)
			return err == nil && got == want, fmt.Sprintf("probe with %s's node certificate: serial %s, %v; want %s", filepath.Base(pki), got, err, want)
		}
	}

	// 1. Trust both CAs: a node of the new CA is let in, the old pair
	// still serves.
	put(cpCA, oldCA, newCA)
	waitFor(t, time.Minute, serves(newPKI, oldCA, serialOf(oldSrvCert)))

	// 2. The new server certificate lands before its key: that pair is
	// refused and the old one keeps serving; once the key lands, the new
	// certificate is presented.
	put(cpCert, newSrvCert)
	waitFor(t, time.Minute, func() (bool, string) {
		ok, why := serves(oldPKI, oldCA, serialOf(oldSrvCert))()
		return ok && strings.Contains(cpLog.String(), "mTLS certificates not reloaded"), why + "; log: " + cpLog.String()
	})
	put(cpKey, newSrvKey)
	waitFor(t, time.Minute, serves(oldPKI, newCA, serialOf(newSrvCert)))

	// 3. The kubelet swaps the Envoy's Secret volume to the new CA's files.
	mountSecret(t, volA, newPKI, nodes[0], 2)
	nodeA, _ := certs.Files{Dir: newPKI}.Node(nodes[0])
	waitFor(t, time.Minute, func() (bool, string) {
		body, _, err := httpGet(ctx, edgeA.AdminURL()+"/certs")
		body = strings.ToLower(body)
		return err == nil && strings.Contains(body, serialOf(nodeA)) && strings.Contains(body, serialOf(newCA)), "/certs: " + body
	})

	// 4. Drop the old CA: its nodes are turned away.
	put(cpCA, newCA)
	waitFor(t, time.Minute, func() (bool, string) {
		_, err := probe(oldPKI, newCA)
		return err != nil, "a node of the old CA still connects"
	})

	// A new Envoy with only the new CA's files syncs, module included (the
	// module server shares the rotated configuration).
	edgeB, _ := startEdge(nodes[1], newPKI)
	waitFor(t, time.Minute, func() (bool, string) {
		_, ok := since(nodes[1])
		return ok, fmt.Sprintf("%s is not connected: %+v", nodes[1], plane.XDS().Status().Nodes())
	})
	if v, err := edgeB.Stat(ctx, "listener_manager.total_listeners_active"); err != nil || v == 0 {
		t.Errorf("the new Envoy has no active listener: %d, %v", v, err)
	}

	if edgeA.PID() != pidA {
		t.Fatal("the first Envoy was restarted")
	}
	if got, ok := since(nodes[0]); !ok || !got.Equal(connectedA) {
		t.Errorf("the first Envoy's xDS stream was not kept: connected %v since %v, before %v", ok, got, connectedA)
	}
	st.end(t) // every frame of the calls came back
	t.Logf("control plane log:\n%s", cpLog.String())
}
