// Command envoy-bootstrap prints the Envoy bootstrap for a directpipe
// control plane. `envoy-bootstrap prestop` is the preStop hook of an
// Envoy pod (see package prestop).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/directpipe/directpipe/envoy/bootstrap"
	"github.com/directpipe/directpipe/envoy/prestop"
)

// list is a flag that takes comma-separated values and may be repeated.
type list []string

func (l *list) String() string { return strings.Join(*l, ",") }
func (l *list) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "prestop" {
		os.Exit(runPrestop(os.Args[2:]))
	}
	var p bootstrap.Params
	var hookDir string
	var xdsAddrs, modAddrs list
	var modPort int
	var t bootstrap.TLS
	flag.StringVar(&p.NodeID, "node", "envoy-local", "node id (with TLS, the one its client certificate names)")
	flag.StringVar(&p.Cluster, "cluster", "directpipe", "node cluster")
	flag.StringVar(&p.AdminSocket, "admin-socket", "envoy-admin.sock", "Envoy admin Unix socket, created 0600 (a relative path is from Envoy's working directory); dpctl audit --envoy-admin unix:PATH reads it")
	flag.IntVar(&p.AdminPort, "admin-port", 0, "serve Envoy admin on this port of 127.0.0.1 instead of -admin-socket")
	flag.Var(&xdsAddrs, "xds-addr", "control-plane xDS address host:port; comma-separated or repeated for replicas")
	flag.StringVar(&p.XDSHost, "xds-host", "127.0.0.1", "control plane host, when -xds-addr is not given")
	flag.IntVar(&p.XDSPort, "xds-port", 18000, "control plane xDS port, when -xds-addr is not given")
	flag.Var(&modAddrs, "modules-addr", "module server host:port, comma-separated or repeated (default: each xDS host at -modules-port; \"off\": Envoy reads module files from its own disk)")
	flag.IntVar(&modPort, "modules-port", 18003, "module server port on each xDS host, when -modules-addr is not given")
	flag.StringVar(&t.CA, "tls-ca", "", "CA that signed the control plane's certificate (turns on mutual TLS)")
	flag.StringVar(&t.Cert, "tls-cert", "", "this Envoy's client certificate")
	flag.StringVar(&t.Key, "tls-key", "", "key of -tls-cert")
	flag.StringVar(&t.ServerName, "tls-server-name", bootstrap.DefaultServerName, "name the control plane's certificate must carry")
	flag.StringVar(&t.SDSDir, "sds-dir", "", "with mutual TLS: write SDS files for the certificate, key and CA into this directory and have Envoy reload them when their directory changes (a rotation needs no restart)")
	flag.StringVar(&p.ReadyAddr, "ready-addr", "", "serve readiness on http://ADDR/ready (host:port, IP host): 503 once Envoy's health check is failed")
	flag.BoolVar(&p.Delta, "delta", false, "use delta (incremental) xDS instead of state of the world")
	flag.IntVar(&p.MaxConnections, "max-connections", bootstrap.DefaultMaxConnections, "client connections Envoy accepts over all listeners together")
	flag.StringVar(&hookDir, "hook-dir", "", "also copy this program into DIR, for an Envoy container to run `DIR/envoy-bootstrap prestop` as its preStop hook")
	flag.StringVar(&p.Filter, "filter", bootstrap.FilterWasm, "handshake filter this Envoy runs: wasm (Proxy-Wasm module) or native (Envoy dynamic module; the control plane needs -native)")
	flag.Parse()
	if hookDir != "" {
		if err := installHook(hookDir); err != nil {
			fmt.Fprintln(os.Stderr, "envoy-bootstrap:", err)
			os.Exit(1)
		}
	}
	if err := run(&p, xdsAddrs, modAddrs, modPort, t); err != nil {
		fmt.Fprintln(os.Stderr, "envoy-bootstrap:", err)
		os.Exit(1)
	}
}

func run(p *bootstrap.Params, xdsAddrs, modAddrs list, modPort int, t bootstrap.TLS) error {
	// Envoy's admin serves its whole config, secrets included, to anyone
	// who reaches it: a socket only this user can open, unless a port is
	// asked for.
	if p.AdminPort != 0 {
		p.AdminSocket = ""
	}
	if len(xdsAddrs) == 0 {
		xdsAddrs = list{net.JoinHostPort(p.XDSHost, strconv.Itoa(p.XDSPort))}
	}
	p.XDSAddrs = xdsAddrs
	switch {
	case len(modAddrs) == 1 && modAddrs[0] == "off":
	case len(modAddrs) > 0:
		p.ModulesAddrs = modAddrs
	default:
		for _, a := range xdsAddrs {
			host, _, err := net.SplitHostPort(a)
			if err != nil {
				return fmt.Errorf("-xds-addr %q: %w", a, err)
			}
			p.ModulesAddrs = append(p.ModulesAddrs, net.JoinHostPort(host, strconv.Itoa(modPort)))
		}
	}
	if t.CA != "" || t.Cert != "" || t.Key != "" {
		p.TLS = &t
	} else if t.SDSDir != "" {
		return fmt.Errorf("-sds-dir needs -tls-ca, -tls-cert and -tls-key")
	}
	out, err := bootstrap.Render(*p)
	if err != nil {
		return err
	}
	if t.SDSDir != "" {
		files, err := bootstrap.SDSFiles(t)
		if err != nil {
			return err
		}
		for path, b := range files {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				return fmt.Errorf("writing SDS file: %w", err)
			}
		}
	}
	_, err = os.Stdout.Write(out)
	return err
}

// runPrestop is `envoy-bootstrap prestop`: exit 0 when no stream is left,
// 3 when the deadline came first (the kubelet records the output in a
// FailedPreStopHook event; Envoy's exit then cuts the streams still
// live), 2 when Envoy's admin did not answer or the flags are wrong.
func runPrestop(args []string) int {
	fs := flag.NewFlagSet("envoy-bootstrap prestop", flag.ContinueOnError)
	var o prestop.Options
	fs.StringVar(&o.Admin, "admin", prestop.DefaultAdmin, "Envoy's admin: unix:/path/to/socket or http://host:port")
	fs.DurationVar(&o.Deadline, "deadline", 55*time.Second, "give up waiting for the streams after this long; keep it below the pod's terminationGracePeriodSeconds")
	fs.DurationVar(&o.Poll, "poll", time.Second, "how often the live streams are counted")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.Out = os.Stdout
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := prestop.Run(ctx, o)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, prestop.ErrDeadline):
		return 3
	default:
		fmt.Fprintln(os.Stderr, "prestop:", err)
		return 2
	}
}

// installHook copies this program into dir, so that a container without a
// shell (the Envoy image) can run it. It is written under a temporary name
// and renamed, so a reader never sees half a program.
func installHook(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("-hook-dir: %w", err)
	}
	src, err := os.Open(self)
	if err != nil {
		return fmt.Errorf("-hook-dir: %w", err)
	}
	defer src.Close()
	dst, err := os.CreateTemp(dir, ".envoy-bootstrap-*")
	if err != nil {
		return fmt.Errorf("-hook-dir: %w", err)
	}
	defer os.Remove(dst.Name())
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("-hook-dir: copy: %w", err)
	}
	if err := dst.Chmod(0o555); err != nil {
		dst.Close()
		return fmt.Errorf("-hook-dir: %w", err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("-hook-dir: %w", err)
	}
	if err := os.Rename(dst.Name(), filepath.Join(dir, "envoy-bootstrap")); err != nil {
		return fmt.Errorf("-hook-dir: %w", err)
	}
	return nil
}
