// Package bootstrap renders the Envoy bootstrap that points Envoy at the
// directpipe control plane: its xDS addresses, the module server it
// fetches Wasm modules from, and the mutual TLS to both. `make run`, the
// end-to-end tests and remote Envoys use the same template.
package bootstrap

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

//go:embed bootstrap.yaml.tmpl
var text string

var tmpl = template.Must(template.New("bootstrap").Funcs(template.FuncMap{"quote": strconv.Quote, "sdsPath": sdsPath}).Parse(text))

// ModuleCluster is the cluster the control plane's filter configs name
// for module downloads (translate.ModuleCluster).
const ModuleCluster = "directpipe_modules"

// DefaultServerName is the name in every control-plane certificate that
// `dpctl certs` issues (certs.ServerName).
const DefaultServerName = "directpipe-control-plane"

// TLS are the files of Envoy's side of mutual TLS with the control plane.
type TLS struct {
	// CA verifies the control plane's certificate.
	CA string
	// Cert and Key are this Envoy's client certificate, whose SAN names
	// its node id.
	Cert, Key string
	// ServerName is the SAN the control plane's certificate must carry
	// (DefaultServerName when empty); it is also sent as SNI.
	ServerName string
	// SDSDir, when set, has Envoy take the certificate, key and CA by
	// path-based SDS from the files SDSFiles makes for this directory, and
	// read them again whenever the directories holding them change: a
	// rotated certificate needs no restart.
	SDSDir string
}

// Names of the SDS secrets, and of their files in TLS.SDSDir.
const (
	ClientCertSecret = "directpipe_client_cert"
	CASecret         = "directpipe_ca"
)

// Params fill the template.
type Params struct {
	NodeID  string
	Cluster string
	// AdminSocket puts Envoy's admin interface on this Unix socket, mode
	// 0600; else AdminPort serves it on 127.0.0.1. One is required.
	AdminSocket string
	AdminPort   int
	// XDSAddrs are the control plane's xDS addresses, host:port; Envoy
	// spreads over them and moves when one fails.
	XDSAddrs []string
	// XDSHost and XDSPort are one address, used when XDSAddrs is empty.
	XDSHost string
	XDSPort int
	// ModulesAddrs are the module servers, host:port; empty when Envoy
	// reads module files from its own disk.
	ModulesAddrs []string
	// TLS, when set, secures both clusters with mutual TLS.
	TLS *TLS
	// Delta selects incremental xDS (DELTA_GRPC) over state of the world.
	Delta bool
	// ReadyAddr, host:port, when set, serves readiness on /ready: 200
	// while Envoy serves, 503 once its health check is failed (the preStop
	// hook does that first).
	ReadyAddr string
	// MaxConnections bounds the client connections of all listeners
	// together (Envoy's global downstream connection monitor);
	// DefaultMaxConnections when zero.
	MaxConnections int
	// Filter is the build of the handshake filter this Envoy asks the
	// control plane for, in its node metadata: FilterNative for the
	// dynamic module; "" or FilterWasm for the Wasm module.
	Filter string
}

// The builds of the handshake filter a node may ask for.
const (
	FilterWasm   = "wasm"
	FilterNative = "native"
)

// DefaultMaxConnections is the global client connection limit when
// Params leaves it out: room for many calls, and far below what exhausts
// a default descriptor limit of a tuned host.
const DefaultMaxConnections = 50000

type endpoint struct {
	Host string
	Port int
}

type cluster struct {
	Name, Type string
	HTTP2      bool
	ALPN       string
	Endpoints  []endpoint
	TLS        *TLS
}

type view struct {
	Params
	// AdminAddress is the admin interface as the node reports it:
	// 127.0.0.1:PORT or unix:PATH.
	AdminAddress string
	Clusters     []cluster
	ReadyHost    string
	ReadyPort    int
	// The SDS secrets' names, for the template.
	ClientCertSecret, CASecret string
}

// Render returns the bootstrap YAML.
func Render(p Params) ([]byte, error) {
	if p.NodeID == "" || p.Cluster == "" || (p.AdminPort == 0) == (p.AdminSocket == "") {
		return nil, errors.New("bootstrap: node id, cluster and one of admin port and admin socket are required")
	}
	xdsAddrs := p.XDSAddrs
	if len(xdsAddrs) == 0 {
		if p.XDSPort == 0 {
			return nil, errors.New("bootstrap: at least one xDS address is required")
		}
		host := p.XDSHost
		if host == "" {
			host = "127.0.0.1"
		}
		xdsAddrs = []string{net.JoinHostPort(host, strconv.Itoa(p.XDSPort))}
	}
	if p.Filter != "" && p.Filter != FilterWasm && p.Filter != FilterNative {
		return nil, fmt.Errorf("bootstrap: unknown filter %q: want %s or %s", p.Filter, FilterWasm, FilterNative)
	}
	switch {
	case p.MaxConnections == 0:
		p.MaxConnections = DefaultMaxConnections
	case p.MaxConnections < 0:
		return nil, errors.New("bootstrap: the connection limit must be positive")
	}
	if t := p.TLS; t != nil {
		if t.CA == "" || t.Cert == "" || t.Key == "" {
			return nil, errors.New("bootstrap: TLS needs a CA, a client certificate and its key")
		}
		if t.ServerName == "" {
			c := *t
			c.ServerName = DefaultServerName
			p.TLS = &c
		}
	}
	v := view{Params: p, AdminAddress: net.JoinHostPort("127.0.0.1", strconv.Itoa(p.AdminPort)),
		ClientCertSecret: ClientCertSecret, CASecret: CASecret}
	if p.ReadyAddr != "" {
		ready, err := newCluster("ready", []string{p.ReadyAddr}, false, nil)
		if err != nil {
			return nil, err
		}
		if ready.Type != "STATIC" {
			return nil, fmt.Errorf("bootstrap: ready address %q: host must be an IP address", p.ReadyAddr)
		}
		v.ReadyHost, v.ReadyPort = ready.Endpoints[0].Host, ready.Endpoints[0].Port
	}
	if p.AdminSocket != "" {
		v.AdminAddress = "unix:" + p.AdminSocket
	}
	xds, err := newCluster("xds_cluster", xdsAddrs, true, p.TLS)
	if err != nil {
		return nil, err
	}
	v.Clusters = append(v.Clusters, xds)
	if len(p.ModulesAddrs) > 0 {
		mods, err := newCluster(ModuleCluster, p.ModulesAddrs, false, p.TLS)
		if err != nil {
			return nil, err
		}
		v.Clusters = append(v.Clusters, mods)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, v); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return buf.Bytes(), nil
}

// newCluster lists addresses as one cluster's endpoints: STATIC when all
// are IP literals, else STRICT_DNS (every name resolved, all addresses
// used).
func newCluster(name string, addrs []string, http2 bool, t *TLS) (cluster, error) {
	c := cluster{Name: name, Type: "STATIC", HTTP2: http2, ALPN: "http/1.1", TLS: t}
	if http2 {
		c.ALPN = "h2"
	}
	for _, a := range addrs {
		host, portStr, err := net.SplitHostPort(strings.TrimSpace(a))
		if err != nil {
			return cluster{}, fmt.Errorf("bootstrap: address %q: %w", a, err)
		}
		port, err := strconv.Atoi(portStr)
		if err != nil || port <= 0 || port > 65535 {
			return cluster{}, fmt.Errorf("bootstrap: address %q: bad port", a)
		}
		if host == "" {
			return cluster{}, fmt.Errorf("bootstrap: address %q has no host", a)
		}
		if net.ParseIP(host) == nil {
			c.Type = "STRICT_DNS"
		}
		c.Endpoints = append(c.Endpoints, endpoint{Host: host, Port: port})
	}
	return c, nil
}

func sdsPath(dir, secret string) string { return filepath.Join(dir, secret+".yaml") }

// SDSFiles returns the files TLS.SDSDir must hold, by path: one SDS
// response per secret, naming the certificate files and the directories
// Envoy watches for their rotation.
func SDSFiles(t TLS) (map[string][]byte, error) {
	if t.SDSDir == "" || t.CA == "" || t.Cert == "" || t.Key == "" {
		return nil, errors.New("bootstrap: SDS files need a directory, a CA, a client certificate and its key")
	}
	const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
	q := strconv.Quote
	cert := fmt.Sprintf(`resources:
  - "@type": %s
    name: %s
    tls_certificate:
      certificate_chain: { filename: %s }
      private_key: { filename: %s }
      watched_directory: { path: %s }
`, secretType, ClientCertSecret, q(t.Cert), q(t.Key), q(filepath.Dir(t.Cert)))
	ca := fmt.Sprintf(`resources:
  - "@type": %s
    name: %s
    validation_context:
      trusted_ca: { filename: %s }
      watched_directory: { path: %s }
`, secretType, CASecret, q(t.CA), q(filepath.Dir(t.CA)))
	return map[string][]byte{
		sdsPath(t.SDSDir, ClientCertSecret): []byte(cert),
		sdsPath(t.SDSDir, CASecret):         []byte(ca),
	}, nil
}
