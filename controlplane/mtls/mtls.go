// Package mtls holds the control plane's side of mutual TLS: the server
// configuration that asks every client for a certificate from the
// configured CA, and the binding of an Envoy's node id to the identity in
// its certificate.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Files are the PEM files of a TLS server that requires client
// certificates.
type Files struct {
	Cert, Key, ClientCA string
}

// Empty reports whether no file is set: the server runs in plaintext.
func (f Files) Empty() bool { return f.Cert == "" && f.Key == "" && f.ClientCA == "" }

// ServerConfig returns a TLS configuration that presents Cert and requires
// a client certificate signed by a CA in ClientCA. All three files are
// read again when they change, so a renewed certificate or a rotated CA
// needs no restart (see files.go); log receives what was loaded or
// refused (nil: discarded).
func ServerConfig(f Files, log *slog.Logger) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" || f.ClientCA == "" {
		return nil, errors.New("mtls: a server certificate, its key and a client CA are all required")
	}
	return serverConfig(f, log, time.Second)
}

// ServingConfig is ServerConfig with the client CA optional: without one,
// clients are not asked for a certificate (the admin API, whose callers
// hold its token).
func ServingConfig(f Files, log *slog.Logger) (*tls.Config, error) {
	if f.Cert == "" || f.Key == "" {
		return nil, errors.New("mtls: a server certificate and its key are both required")
	}
	return serverConfig(f, log, time.Second)
}

// serverConfig looks at the files at most once per recheck.
func serverConfig(f Files, log *slog.Logger, recheck time.Duration) (*tls.Config, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &watched{files: f, log: log, recheck: recheck}
	if err := w.load(); err != nil {
		return nil, err
	}
	base := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: w.current().ClientAuth,
		NextProtos: []string{"h2", "http/1.1"},
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := w.current().Clone()
		// A server may narrow the protocols on the configuration it was
		// handed (grpc adds h2); honour that, not our default.
		c.NextProtos = base.NextProtos
		return c, nil
	}
	return base, nil
}

// ClientConfig returns the configuration of a client of such a server: its
// own certificate, the CA to verify the server by, and the server name to
// expect.
func ClientConfig(certFile, keyFile, caFile, serverName string) (*tls.Config, error) {
	pool, err := LoadPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: serverName}
	if certFile != "" {
		pair, err := LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("mtls: client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}

// maxPEMBytes bounds a certificate or key file: a chain of a few
// certificates is kilobytes.
const maxPEMBytes = 1 << 20

// LoadKeyPair reads a certificate and its private key. A key file that
// other users may read, or its group may write, is refused, as ssh and
// PostgreSQL refuse theirs: the key is the process's identity on the
// network. Group read stays allowed for a key shared with a service
// group (Kubernetes' fsGroup); a Secret volume needs defaultMode 0400,
// 0440 or 0600. The mode is read from the open file, so a rename in
// between cannot swap what is checked for what is read.
func LoadKeyPair(certFile, keyFile string) (tls.Certificate, error) {
	key, err := readKey(keyFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := readBounded(certFile)
	if err != nil {
		return tls.Certificate{}, err
	}
	pair, err := tls.X509KeyPair(cert, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	return pair, nil
}

func readKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if perm := info.Mode().Perm(); perm&0o037 != 0 {
		return nil, fmt.Errorf("private key %s has mode %04o: other users may read it or its group may change it; run chmod 600 %s", path, perm, path)
	}
	return readAll(f, path)
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAll(f, path)
}

func readAll(r io.Reader, path string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxPEMBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxPEMBytes {
		return nil, fmt.Errorf("%s is more than %d bytes", path, maxPEMBytes)
	}
	return b, nil
}

// LoadPool reads a PEM bundle of CA certificates.
func LoadPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("mtls: CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("mtls: CA: no certificate in %s", file)
	}
	return pool, nil
}

// Binding ties a node id to a certificate: the pattern with {node}
// replaced by the node id must be one of the certificate's URI SANs (a
// pattern with a scheme, e.g. spiffe://directpipe/node/{node}) or DNS SANs
// (e.g. {node}.envoy.example.com).
type Binding struct {
	prefix, suffix string
	uri            bool
}

// NewBinding parses an identity pattern.
func NewBinding(pattern string) (Binding, error) {
	if strings.Count(pattern, "{node}") != 1 {
		return Binding{}, fmt.Errorf("mtls: identity pattern %q must hold {node} exactly once", pattern)
	}
	prefix, suffix, _ := strings.Cut(pattern, "{node}")
	return Binding{prefix: prefix, suffix: suffix, uri: strings.Contains(pattern, "://")}, nil
}

// Identities lists the node ids a certificate may speak for.
func (b Binding) Identities(cert *x509.Certificate) []string {
	var sans []string
	if b.uri {
		for _, u := range cert.URIs {
			sans = append(sans, u.String())
		}
	} else {
		sans = cert.DNSNames
	}
	var ids []string
	for _, s := range sans {
		if len(s) > len(b.prefix)+len(b.suffix) && strings.HasPrefix(s, b.prefix) && strings.HasSuffix(s, b.suffix) {
			ids = append(ids, s[len(b.prefix):len(s)-len(b.suffix)])
		}
	}
	return ids
}

// Check says whether cert may speak for node, and if not, why, in words an
// operator can act on.
func (b Binding) Check(cert *x509.Certificate, node string) error {
	ids := b.Identities(cert)
	for _, id := range ids {
		if id == node {
			return nil
		}
	}
	kind := "DNS"
	if b.uri {
		kind = "URI"
	}
	if len(ids) == 0 {
		return fmt.Errorf("the client certificate has no %s SAN of the form %s{node}%s", kind, b.prefix, b.suffix)
	}
	return fmt.Errorf("node id %q does not match the client certificate, which is for node %q", clip(node), clip(ids[0]))
}

// clip keeps a hostile node id from filling an error message.
func clip(s string) string {
	const max = 64
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
