package store

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/directpipe/directpipe/controlplane/mtls"
)

const (
	// DefaultPrefix is where a fleet keeps its keys in etcd.
	DefaultPrefix = "/directpipe/"
	// DefaultHistory is how many revisions are kept for history and
	// rollback.
	DefaultHistory = 20
)

// EtcdConfig says how to reach etcd and where the fleet's keys live.
type EtcdConfig struct {
	Endpoints []string
	// TLS, when set, is used for every connection to etcd.
	TLS *tls.Config
	// Prefix of every key (DefaultPrefix when empty).
	Prefix string
	// Replica names this control plane in history entries, node records
	// and elections.
	Replica string
	// History is how many revisions to keep (DefaultHistory when 0).
	History int
	// LeaseTTL is the lease of this replica's node records and elections
	// (10 s when 0): how long a dead replica's nodes and leadership last.
	LeaseTTL time.Duration
	Log      *slog.Logger
}

// ParseURL reads a -store value of the form etcd://host:port[,host:port...]
// into its endpoints.
func ParseURL(s string) ([]string, error) {
	rest, ok := strings.CutPrefix(s, "etcd://")
	if !ok {
		return nil, fmt.Errorf("store %q: want etcd://host:port[,host:port...] (or no -store for the policy file)", s)
	}
	var eps []string
	for ep := range strings.SplitSeq(rest, ",") {
		ep = strings.TrimSpace(ep)
		if ep == "" {
			continue
		}
		if strings.ContainsAny(ep, "/?#@") || !strings.Contains(ep, ":") {
			return nil, fmt.Errorf("store %q: endpoint %q is not host:port", s, ep)
		}
		eps = append(eps, ep)
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("store %q: no endpoint", s)
	}
	if len(eps) > 16 {
		return nil, fmt.Errorf("store %q: %d endpoints, at most 16", s, len(eps))
	}
	return eps, nil
}

// ClientTLS builds the TLS configuration for etcd from PEM files: the CA
// that signed etcd's certificates and, optionally, a client certificate.
func ClientTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA: no certificate in %s", caFile)
		}
		cfg.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("etcd client certificate: give both -etcd-cert and -etcd-key")
	}
	if certFile != "" {
		cert, err := mtls.LoadKeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}
