package mtls

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/controlplane/certs"
)

// TestServerConfigTakesOnlyWholeSets: the server's certificate, key and
// client CA are read again when they change. A rotation to a new CA is
// served at the next handshake; a set that is half-written, mismatched or
// unsafe is refused with a log line, and the last good set keeps serving
// (its certificate presented, its CAs trusted) until a good set arrives.
func TestServerConfigTakesOnlyWholeSets(t *testing.T) {
	oldPKI, newPKI := t.TempDir(), t.TempDir()
	for _, dir := range []string{oldPKI, newPKI} {
		if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}, Nodes: []string{"edge-1"}}); err != nil {
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
	type set struct{ cert, key, ca []byte }
	pki := func(dir string) set {
		c, k := certs.Files{Dir: dir}.Server()
		ca, _ := certs.Files{Dir: dir}.CA()
		return set{read(c), read(k), read(ca)}
	}
	oldSet, newSet := pki(oldPKI), pki(newPKI)

	dir := t.TempDir()
	f := Files{Cert: filepath.Join(dir, "tls.crt"), Key: filepath.Join(dir, "tls.key"), ClientCA: filepath.Join(dir, "ca.crt")}
	write := func(s set) {
		for path, b := range map[string][]byte{f.Cert: s.cert, f.Key: s.key, f.ClientCA: s.ca} {
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, 0o600); err != nil { // WriteFile keeps an existing file's mode
				t.Fatal(err)
			}
		}
	}
	write(oldSet)
	var log bytes.Buffer
	cfg, err := serverConfig(f, slog.New(slog.NewTextHandler(&log, nil)), 0) // every handshake looks at the files
	if err != nil {
		t.Fatal(err)
	}
	// What a client would see: the served certificate, and whether the
	// server trusts a node of each PKI.
	serving := func() (leaf *x509.Certificate, trusts map[string]bool) {
		c, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		trusts = map[string]bool{}
		for name, dir := range map[string]string{"old": oldPKI, "new": newPKI} {
			nc, _ := certs.Files{Dir: dir}.Node("edge-1")
			blk, _ := pem.Decode(read(nc))
			node, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			_, err = node.Verify(x509.VerifyOptions{Roots: c.ClientCAs, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			trusts[name] = err == nil
		}
		return c.Certificates[0].Leaf, trusts
	}
	serial := func(s set) string {
		blk, _ := pem.Decode(s.cert)
		c, _ := x509.ParseCertificate(blk.Bytes)
		return fmt.Sprintf("%x", c.SerialNumber)
	}

	both := set{newSet.cert, newSet.key, append(append([]byte{}, oldSet.ca...), newSet.ca...)}
	for _, tc := range []struct {
		name      string
		write     set
		keyMode   os.FileMode
		serves    set
		trustsOld bool
		trustsNew bool
		logs      string
	}{
		{name: "first", write: oldSet, serves: oldSet, trustsOld: true},
		{name: "cert written, key not yet", write: set{newSet.cert, oldSet.key, oldSet.ca}, serves: oldSet, trustsOld: true, logs: "private key does not match public key"},
		{name: "half-written cert", write: set{newSet.cert[:len(newSet.cert)/2], newSet.key, newSet.ca}, serves: oldSet, trustsOld: true, logs: "not reloaded"},
		{name: "half-written CA bundle", write: set{newSet.cert, newSet.key, both.ca[:len(both.ca)-40]}, serves: oldSet, trustsOld: true, logs: "not a whole PEM block"},
		{name: "key others may read", write: newSet, keyMode: 0o644, serves: oldSet, trustsOld: true, logs: "chmod 600"},
		{name: "key in the CA bundle", write: set{newSet.cert, newSet.key, append(append([]byte{}, newSet.ca...), newSet.key...)}, serves: oldSet, trustsOld: true, logs: "only certificates belong there"},
		{name: "new server cert, both CAs trusted", write: both, serves: newSet, trustsOld: true, trustsNew: true},
		{name: "old CA dropped", write: newSet, serves: newSet, trustsNew: true},
	} {
		log.Reset()
		write(tc.write)
		if tc.keyMode != 0 {
			os.Chmod(f.Key, tc.keyMode)
		}
		leaf, trusts := serving()
		if got, want := fmt.Sprintf("%x", leaf.SerialNumber), serial(tc.serves); got != want {
			t.Errorf("%s: serves certificate %s, want %s", tc.name, got, want)
		}
		if trusts["old"] != tc.trustsOld || trusts["new"] != tc.trustsNew {
			t.Errorf("%s: trusts %v, want old %v new %v", tc.name, trusts, tc.trustsOld, tc.trustsNew)
		}
		if tc.logs != "" && !strings.Contains(log.String(), tc.logs) {
			t.Errorf("%s: log %q does not say %q", tc.name, log.String(), tc.logs)
		}
		if tc.logs == "" && strings.Contains(log.String(), "not reloaded") {
			t.Errorf("%s: a good set was refused: %s", tc.name, log.String())
		}
		// A refused set is logged once, not at every handshake.
		log.Reset()
		serving()
		if strings.Contains(log.String(), "not reloaded") {
			t.Errorf("%s: the same refusal logged twice", tc.name)
		}
	}
}

// TestServerConfigRefusesABadStart: with no good set yet there is nothing
// to keep serving, so the server does not start.
func TestServerConfigRefusesABadStart(t *testing.T) {
	certFile, keyFile := writePair(t, 0o644)
	if _, err := ServerConfig(Files{Cert: certFile, Key: keyFile, ClientCA: certFile}, nil); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a server started on a readable key: %v", err)
	}
	certFile, keyFile = writePair(t, 0o600)
	other, _ := writePair(t, 0o600)
	if _, err := ServerConfig(Files{Cert: other, Key: keyFile, ClientCA: certFile}, nil); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("a server started on a mismatched pair: %v", err)
	}
}

// TestServingConfigWithoutClientCA: the admin API's server asks for no
// client certificate when it has no CA, and takes a renewed pair too.
func TestServingConfigWithoutClientCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	cert, key := certs.Files{Dir: dir}.Server()
	cfg, err := serverConfig(Files{Cert: cert, Key: key}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		c, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		if c.ClientAuth != tls.NoClientCert || cfg.ClientAuth != tls.NoClientCert {
			t.Errorf("client auth %v, %v: want none", c.ClientAuth, cfg.ClientAuth)
		}
		return c.Certificates[0].Leaf.SerialNumber.String()
	}
	first := serial()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}}); err != nil { // a renewal, same CA
		t.Fatal(err)
	}
	if serial() == first {
		t.Error("the renewed certificate is not served")
	}
	if _, err := ServingConfig(Files{Cert: cert}, nil); err == nil {
		t.Error("a server without a key")
	}
}
