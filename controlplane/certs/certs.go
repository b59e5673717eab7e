// Package certs issues the certificates of a directpipe deployment: a CA,
// the control plane's server certificate and one client certificate per
// Envoy, whose SAN carries the node id the control plane binds it to.
// It is for demos, tests and small fleets; a fleet with its own PKI issues
// the same SANs from there.
package certs

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ServerName is in every control-plane certificate this package issues, so
// an Envoy verifies every replica by one name wherever it runs.
const ServerName = "directpipe-control-plane"

// DefaultNodeIdentity is the SAN pattern a node's certificate carries:
// {node} stands for the node id.
const DefaultNodeIdentity = "spiffe://directpipe/node/{node}"

// Authority is a CA that signs server and client certificates.
type Authority struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
	keyPEM  []byte
}

// NewAuthority makes a self-signed CA.
func NewAuthority(name string, validity time.Duration) (*Authority, error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, err
	}
	tmpl, err := template(name, validity)
	if err != nil {
		return nil, err
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.MaxPathLenZero = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certs: sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, CertPEM: pemBlock("CERTIFICATE", der), key: key, keyPEM: keyPEM}, nil
}

// LoadAuthority reads a CA written by WriteAuthority.
func LoadAuthority(certFile, keyFile string) (*Authority, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("certs: load CA: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("certs: %s is not a CA certificate", certFile)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certs: %s: key cannot sign", keyFile)
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	return &Authority{Cert: cert, CertPEM: certPEM, key: signer, keyPEM: keyPEM}, nil
}

// Request describes a certificate to issue.
type Request struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	URIs       []*url.URL
	// Server and Client set the extended key usages.
	Server, Client bool
	Validity       time.Duration
}

// Issue signs a certificate and returns it and its key, both PEM.
func (a *Authority) Issue(r Request) (certPEM, keyPEM []byte, err error) {
	key, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl, err := template(r.CommonName, r.Validity)
	if err != nil {
		return nil, nil, err
	}
	tmpl.DNSNames, tmpl.IPAddresses, tmpl.URIs = r.DNSNames, r.IPs, r.URIs
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	if r.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if r.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.Cert, key.Public(), a.key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: sign %q: %w", r.CommonName, err)
	}
	return pemBlock("CERTIFICATE", der), keyPEM, nil
}

// ServerRequest is the control plane's certificate: ServerName plus the
// host names and addresses Envoys and dpctl reach it by.
func ServerRequest(hosts []string, validity time.Duration) Request {
	r := Request{CommonName: ServerName, DNSNames: []string{ServerName}, Server: true, Validity: validity}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			r.IPs = append(r.IPs, ip)
		} else if h != "" {
			r.DNSNames = append(r.DNSNames, h)
		}
	}
	return r
}

// NodeRequest is an Envoy's client certificate: the identity pattern with
// the node id in it, as a URI SAN when the pattern has a scheme and as a
// DNS SAN otherwise.
func NodeRequest(pattern, node string, validity time.Duration) (Request, error) {
	if pattern == "" {
		pattern = DefaultNodeIdentity
	}
	if strings.Count(pattern, "{node}") != 1 {
		return Request{}, fmt.Errorf("certs: identity pattern %q must hold {node} once", pattern)
	}
	if node == "" {
		return Request{}, errors.New("certs: empty node id")
	}
	san := strings.Replace(pattern, "{node}", node, 1)
	r := Request{CommonName: node, Client: true, Validity: validity}
	if strings.Contains(pattern, "://") {
		u, err := url.Parse(san)
		if err != nil {
			return Request{}, fmt.Errorf("certs: identity %q: %w", san, err)
		}
		r.URIs = []*url.URL{u}
	} else {
		r.DNSNames = []string{san}
	}
	return r, nil
}

// Files names the PEM files of a deployment directory.
type Files struct{ Dir string }

func (f Files) CA() (cert, key string) {
	return filepath.Join(f.Dir, "ca.crt"), filepath.Join(f.Dir, "ca.key")
}

func (f Files) Server() (cert, key string) {
	return filepath.Join(f.Dir, "server.crt"), filepath.Join(f.Dir, "server.key")
}

func (f Files) Node(id string) (cert, key string) {
	return filepath.Join(f.Dir, "nodes", id+".crt"), filepath.Join(f.Dir, "nodes", id+".key")
}

// Plan is what Generate writes.
type Plan struct {
	Dir string
	// Hosts are the control plane's names and addresses (its SANs besides
	// ServerName).
	Hosts []string
	// Nodes are the node ids to issue client certificates for.
	Nodes []string
	// Identity is the node SAN pattern (DefaultNodeIdentity when empty).
	Identity string
	Validity time.Duration
}

// Generate writes a CA (or reuses the one in Dir), a server certificate and
// one client certificate per node; keys are 0600. It returns the files it
// wrote.
func Generate(p Plan) ([]string, error) {
	if p.Validity <= 0 {
		p.Validity = 365 * 24 * time.Hour
	}
	for _, n := range p.Nodes {
		if err := checkNodeFileName(n); err != nil {
			return nil, err
		}
	}
	f := Files{Dir: p.Dir}
	if err := os.MkdirAll(filepath.Join(p.Dir, "nodes"), 0o755); err != nil {
		return nil, err
	}
	caCert, caKey := f.CA()
	ca, err := LoadAuthority(caCert, caKey)
	var written []string
	if errors.Is(err, os.ErrNotExist) {
		if ca, err = NewAuthority("directpipe CA", 10*p.Validity); err != nil {
			return nil, err
		}
		if err := writePair(caCert, ca.CertPEM, caKey, ca.keyPEM); err != nil {
			return nil, err
		}
		written = append(written, caCert, caKey)
	} else if err != nil {
		return nil, err
	}
	issue := func(r Request, cert, key string) error {
		c, k, err := ca.Issue(r)
		if err != nil {
			return err
		}
		written = append(written, cert, key)
		return writePair(cert, c, key, k)
	}
	sc, sk := f.Server()
	if err := issue(ServerRequest(p.Hosts, p.Validity), sc, sk); err != nil {
		return nil, err
	}
	for _, n := range p.Nodes {
		r, err := NodeRequest(p.Identity, n, p.Validity)
		if err != nil {
			return nil, err
		}
		nc, nk := f.Node(n)
		if err := issue(r, nc, nk); err != nil {
			return nil, err
		}
	}
	return written, nil
}

// checkNodeFileName keeps a node id from naming a file outside nodes/.
func checkNodeFileName(n string) error {
	if n == "" || n == "." || n == ".." || strings.ContainsAny(n, `/\`) || strings.ContainsRune(n, 0) {
		return fmt.Errorf("certs: node id %q cannot name a file", n)
	}
	return nil
}

func writePair(certFile string, cert []byte, keyFile string, key []byte) error {
	if err := os.WriteFile(certFile, cert, 0o644); err != nil {
		return err
	}
	// WriteFile keeps the mode of an existing file: make sure a key is
	// never left readable by others.
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return err
	}
	return os.Chmod(keyFile, 0o600)
}

func newKey() (crypto.Signer, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: key: %w", err)
	}
	return key, pemBlock("PRIVATE KEY", der), nil
}

func template(cn string, validity time.Duration) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	if validity <= 0 {
		validity = 365 * 24 * time.Hour
	}
	now := time.Now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"directpipe"}},
		// A little slack for clocks that disagree.
		NotBefore: now.Add(-time.Hour),
		NotAfter:  now.Add(validity),
	}, nil
}

func pemBlock(kind string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der})
}
