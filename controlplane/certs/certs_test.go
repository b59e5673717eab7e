package certs

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/mtls"
)

func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	p := Plan{Dir: dir, Hosts: []string{"cp1.example.com", "10.0.0.1"}, Nodes: []string{"edge-1", "edge-2"}}
	if _, err := Generate(p); err != nil {
		t.Fatal(err)
	}
	f := Files{Dir: dir}
	caCert, caKey := f.CA()
	ca, err := LoadAuthority(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(caKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode: %v %v", st.Mode(), err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	srv := parse(t, f.Server)
	if _, err := srv.Verify(x509.VerifyOptions{Roots: roots, DNSName: ServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("server certificate for %s: %v", ServerName, err)
	}
	if err := srv.VerifyHostname("10.0.0.1"); err != nil {
		t.Error(err)
	}
	b, _ := mtls.NewBinding(DefaultNodeIdentity)
	node := parse(t, func() (string, string) { return f.Node("edge-2") })
	if _, err := node.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Error(err)
	}
	if err := b.Check(node, "edge-2"); err != nil {
		t.Error(err)
	}
	if err := b.Check(node, "edge-1"); err == nil {
		t.Error("edge-2's certificate speaks for edge-1")
	}
	// A second run keeps the CA, so certificates issued before still verify.
	if _, err := Generate(Plan{Dir: dir, Nodes: []string{"edge-3"}}); err != nil {
		t.Fatal(err)
	}
	again, _ := LoadAuthority(caCert, caKey)
	if !again.Cert.Equal(ca.Cert) {
		t.Error("the CA was replaced")
	}
	for _, bad := range []string{"../x", "a/b", ""} {
		if _, err := Generate(Plan{Dir: dir, Nodes: []string{bad}}); err == nil {
			t.Errorf("node id %q accepted as a file name", bad)
		}
	}
	// A DNS identity pattern issues a DNS SAN.
	r, err := NodeRequest("{node}.envoy.example.com", "edge-9", time.Hour)
	if err != nil || len(r.DNSNames) != 1 || r.DNSNames[0] != "edge-9.envoy.example.com" || len(r.URIs) != 0 {
		t.Errorf("DNS identity: %+v %v", r, err)
	}
}

func parse(t *testing.T, files func() (string, string)) *x509.Certificate {
	t.Helper()
	cert, _ := files()
	b, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM", cert)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
