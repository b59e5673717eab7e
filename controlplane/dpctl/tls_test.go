package dpctl

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/app"
)

// TestMutualTLS runs dpctl against a real control plane whose admin API
// asks for client certificates: with one it works, without one it fails.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCA(t)
	caFile := writePEM(t, dir, "ca.pem", "CERTIFICATE", ca.Raw)
	serverCert := issue(t, dir, "server", ca, caKey, x509.ExtKeyUsageServerAuth)
	clientCert := issue(t, dir, "client", ca, caKey, x509.ExtKeyUsageClientAuth)

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	cert, err := tls.LoadX509KeyPair(serverCert+".crt", serverCert+".key")
	if err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policyFile, []byte(`listeners: [{ name: l, address: "127.0.0.1:10000" }]`+"\n"), 0o644)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, app.Config{
		PolicyFile: policyFile, XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", AdminToken: token, WasmPath: "/x.wasm",
		AdminTLS: &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12},
		Log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	base := []string{"--addr", a.AdminAddr(), "--token", token, "--tls", "--ca-file", caFile, "--server-name", "localhost", "--timeout", "3s"}
	var out, errb bytes.Buffer
	if code := Run(ctx, append(base, "--cert-file", clientCert+".crt", "--key-file", clientCert+".key", "policy", "get"), &out, &errb); code != 0 {
		t.Fatalf("with a client certificate: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "# revision:") {
		t.Errorf("policy get: %s", out.String())
	}
	errb.Reset()
	if code := Run(ctx, append(base, "policy", "get"), &out, &errb); code == 0 {
		t.Error("a client without a certificate was let in")
	}
}

func newCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dp test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return ca, key
}

// issue writes <dir>/<name>.crt and .key signed by the CA and returns the
// path without extension.
func issue(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, dir, name+".crt", "CERTIFICATE", der)
	writePEM(t, dir, name+".key", "EC PRIVATE KEY", keyDER)
	return filepath.Join(dir, name)
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
