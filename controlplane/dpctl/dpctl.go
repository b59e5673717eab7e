// Package dpctl is the command-line client of the control plane's admin
// API. Run is the whole program, so tests call it directly.
package dpctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	"github.com/directpipe/directpipe/controlplane/mtls"
	"github.com/directpipe/directpipe/controlplane/statedir"
)

const usage = `dpctl talks to the directpipe control plane's admin API.

Usage:
  dpctl [flags] status                      one row per Envoy, one column per xDS type
  dpctl [flags] nodes                       Envoys connected now and recently
  dpctl [flags] keys                        key sets (jwks_file, jwks_url): keys served and
                                            skipped, last success, last error
  dpctl [flags] policy get                  the policy being served, with its revision
  dpctl [flags] policy validate -f FILE     check a policy without applying it
  dpctl [flags] policy diff -f FILE         the Envoy resources an apply would change
  dpctl [flags] policy apply -f FILE [--revision REV] [--allow-drain] [--wait D]
                                            apply a policy; with --revision, only if
                                            the served policy is still REV; a change
                                            that drains listeners needs --allow-drain;
                                            waits up to D (default 30s, 0: not at all)
                                            for every connected Envoy's ACK or NACK,
                                            and exits 1 if one rejected it or did not
                                            answer
  dpctl [flags] policy history              the last stored revisions (etcd store)
  dpctl [flags] policy rollback --to REV [--allow-drain] [--wait D]
                                            apply a revision from the history again
  dpctl [flags] top [--backend B]          live streams per back end, route and endpoint
                                            over the fleet, by node, with the drains
                                            (also: dpctl streams)
  dpctl [flags] drain BACKEND ENDPOINT [--deadline D] [--wait] [--cancel]
                                            mark the endpoint DRAINING on every Envoy:
                                            no new stream, live ones go on; it leaves
                                            EDS at 0 streams or at the deadline (default
                                            10m); --wait shows the count falling;
                                            --cancel takes it back
  dpctl [flags] config --node ID [--type T] the resources a node is served, as JSON
  dpctl [flags] events                      follow events until interrupted (--follow
                                            is accepted and is the only mode)
  dpctl [flags] audit --envoy-admin URL|unix:PATH | -f CONFIG_DUMP [--fail-on SEVERITY]
                                            where any Envoy's config hurts WebSocket and
                                            raw streams (needs no control plane; exit 3
                                            when a finding is at or above --fail-on)
  dpctl certs -dir DIR [-hosts H,...] [-nodes ID,...] [-identity PATTERN] [-days N]
                                            write a CA (kept if DIR has one), the control
                                            plane's certificate for hosts H and one client
                                            certificate per Envoy node id (no control plane
                                            needed)

Flags (before or after the command):
`

// globals are the flags every command takes.
type globals struct {
	addr, tokenFile, token, output     string
	timeout                            time.Duration
	useTLS                             bool
	caFile, certFile, keyFile, srvName string
}

func defaultGlobals() *globals {
	return &globals{
		addr:      envOr("DPCTL_ADDR", "127.0.0.1:18001"),
		tokenFile: statedir.DefaultTokenFile(),
		token:     os.Getenv("DPCTL_TOKEN"),
		output:    "table",
		timeout:   10 * time.Second,
	}
}

// register adds the global flags with their current values as defaults, so
// that flags given before the command survive parsing the ones after it.
func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.addr, "addr", g.addr, "admin API address (env DPCTL_ADDR)")
	fs.StringVar(&g.tokenFile, "token-file", g.tokenFile, "admin token file")
	fs.StringVar(&g.token, "token", g.token, "admin token; overrides --token-file (env DPCTL_TOKEN)")
	fs.StringVar(&g.output, "o", g.output, "output: table, json or yaml")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "time limit of a call (not of events)")
	fs.BoolVar(&g.useTLS, "tls", g.useTLS, "use TLS (for a remote control plane)")
	fs.StringVar(&g.caFile, "ca-file", g.caFile, "CA that signed the control plane's certificate")
	fs.StringVar(&g.certFile, "cert-file", g.certFile, "client certificate, when the control plane asks for one")
	fs.StringVar(&g.keyFile, "key-file", g.keyFile, "client certificate's key")
	fs.StringVar(&g.srvName, "server-name", g.srvName, "expected server name in the certificate")
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// usageError is a mistake in the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Run runs dpctl with args (without the program name) and returns the exit
// code: 0 on success, 1 on an error, 2 on a usage mistake.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := defaultGlobals()
	fs := flag.NewFlagSet("dpctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		fmt.Fprintf(stderr, "dpctl: %v\n", err)
		return 2
	}
	err := dispatch(ctx, g, fs.Args(), stdout)
	var ue usageError
	var fe findingsError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &fe):
		fmt.Fprintf(stderr, "dpctl: %v\n", err)
		return 3
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "dpctl: %v (dpctl -h for help)\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "dpctl: %s\n", explain(err, g.addr))
		return 1
	}
}

// explain turns gRPC errors into what a person should do about them.
func explain(err error, addr string) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unauthenticated:
		return "the control plane refused the token (check --token-file or --token)"
	case codes.Unavailable:
		return fmt.Sprintf("cannot reach the control plane at %s: %s", addr, st.Message())
	case codes.FailedPrecondition:
		if wouldDrain(st) {
			return fmt.Sprintf("refused: %s; apply with --allow-drain to go ahead", st.Message())
		}
		return fmt.Sprintf("%s: run `dpctl policy get` and apply again", st.Message())
	case codes.InvalidArgument:
		return "rejected: " + st.Message()
	case codes.NotFound:
		return st.Message()
	case codes.DeadlineExceeded:
		return fmt.Sprintf("the control plane at %s did not answer in time", addr)
	}
	return fmt.Sprintf("%s: %s", st.Code(), st.Message())
}

func dispatch(ctx context.Context, g *globals, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{"a command is required"}
	}
	name := args[0]
	rest := args[1:]
	if name == "audit" {
		return auditCmd(ctx, g, rest, out)
	}
	if name == "certs" {
		return certsCommand(rest, out)
	}
	switch name {
	case "top", "streams":
		return streamsCmd(ctx, g, rest, out)
	case "drain":
		return drainCmd(ctx, g, rest, out)
	}
	if name == "policy" {
		if len(rest) == 0 {
			return usageError{"policy needs get, validate, diff, apply, history or rollback"}
		}
		name, rest = "policy "+rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("dpctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	var file, revision, node, typ, to string
	var follow, allowDrain bool
	wait := defaultApplyWait
	switch name {
	case "policy validate", "policy diff", "policy apply":
		fs.StringVar(&file, "f", "", "policy file (YAML)")
		fs.StringVar(&revision, "revision", "", "apply only if the served policy is still this revision")
		if name == "policy apply" {
			fs.BoolVar(&allowDrain, "allow-drain", false, "apply even if listeners are replaced or removed, which drains their connections")
			fs.DurationVar(&wait, "wait", wait, "wait this long for every connected Envoy to ACK or NACK the change (0: do not wait)")
		}
	case "policy rollback":
		fs.StringVar(&to, "to", "", "revision (or a prefix of it) from `dpctl policy history`")
		fs.BoolVar(&allowDrain, "allow-drain", false, "roll back even if listeners are replaced or removed")
		fs.DurationVar(&wait, "wait", wait, "wait this long for every connected Envoy to ACK or NACK the change (0: do not wait)")
	case "config":
		fs.StringVar(&node, "node", "", "node id")
		fs.StringVar(&typ, "type", "", "only this type (Listener, RouteConfiguration, Cluster, ClusterLoadAssignment, TypedExtensionConfig)")
	case "events":
		fs.BoolVar(&follow, "follow", true, "follow events until interrupted")
	case "status", "nodes", "keys", "policy get", "policy history":
	default:
		return usageError{fmt.Sprintf("unknown command %q", name)}
	}
	if err := fs.Parse(rest); err != nil {
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if g.output != "table" && g.output != "json" && g.output != "yaml" {
		return usageError{fmt.Sprintf("-o %s: want table, json or yaml", g.output)}
	}
	if name == "policy rollback" && to == "" {
		return usageError{"policy rollback needs --to REV"}
	}
	if slices.Contains([]string{"policy validate", "policy diff", "policy apply"}, name) && file == "" {
		return usageError{name + " needs -f FILE"}
	}
	if wait < 0 || wait > maxApplyWait {
		return usageError{fmt.Sprintf("--wait %s: want 0 to %s", wait, maxApplyWait)}
	}
	if name == "config" && node == "" {
		return usageError{"config needs --node ID"}
	}

	// Local checks first: a broken file never costs a round trip.
	var local *localPolicy
	if file != "" {
		var err error
		if local, err = readPolicy(file); err != nil {
			return err
		}
	}
	client, closeConn, err := dial(g)
	if err != nil {
		return err
	}
	defer closeConn()
	c := &cli{client: client, g: g, out: out}
	if name == "events" {
		return c.events(ctx)
	}
	// An apply's call lasts as long as its wait for the Envoys' answers.
	limit := g.timeout
	if name == "policy apply" || name == "policy rollback" {
		limit += wait
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	switch name {
	case "status":
		return c.status(ctx)
	case "nodes":
		return c.nodes(ctx)
	case "keys":
		return c.keys(ctx)
	case "policy get":
		return c.policyGet(ctx)
	case "policy validate":
		return c.policyValidate(ctx, local)
	case "policy diff":
		return c.policyApply(ctx, local, "", true, false, 0)
	case "policy apply":
		return c.policyApply(ctx, local, revision, false, allowDrain, wait)
	case "policy history":
		return c.policyHistory(ctx)
	case "policy rollback":
		return c.policyRollback(ctx, to, allowDrain, wait)
	case "config":
		return c.config(ctx, node, typ)
	}
	return nil
}

type cli struct {
	client adminv1.AdminServiceClient
	g      *globals
	out    io.Writer
}

// bearer sends the admin token with every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity is false: the default deployment is loopback.
func (bearer) RequireTransportSecurity() bool { return false }

// loopbackTarget reports whether a gRPC target stays on this host: a
// loopback IP, localhost, or a Unix socket. Names are not resolved: one
// that resolves to loopback today may not tomorrow.
func loopbackTarget(target string) bool {
	if strings.HasPrefix(target, "unix:") || strings.HasPrefix(target, "unix-abstract:") {
		return true
	}
	for _, scheme := range []string{"dns:///", "passthrough:///"} {
		target = strings.TrimPrefix(target, scheme)
	}
	host, _, err := net.SplitHostPort(target)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func dial(g *globals) (adminv1.AdminServiceClient, func(), error) {
	token := strings.TrimSpace(g.token)
	if token == "" {
		var err error
		if token, err = statedir.ReadToken(g.tokenFile); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				err = fmt.Errorf("%w (is the control plane running here? or pass --token-file)", err)
			}
			return nil, nil, err
		}
	}
	useTLS := g.useTLS || g.caFile != "" || g.certFile != ""
	if !useTLS && !loopbackTarget(g.addr) {
		return nil, nil, fmt.Errorf("refusing to send the admin token in cleartext to %s: use --tls (with --ca-file), or a loopback address", g.addr)
	}
	creds := insecure.NewCredentials()
	if useTLS {
		cfg := &tls.Config{ServerName: g.srvName, MinVersion: tls.VersionTLS12}
		if g.caFile != "" {
			pem, err := os.ReadFile(g.caFile)
			if err != nil {
				return nil, nil, fmt.Errorf("read --ca-file: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("--ca-file %s holds no certificate", g.caFile)
			}
		}
		if g.certFile != "" {
			cert, err := mtls.LoadKeyPair(g.certFile, g.keyFile)
			if err != nil {
				return nil, nil, fmt.Errorf("client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(g.addr, grpc.WithTransportCredentials(creds), grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to %s: %w", g.addr, err)
	}
	return adminv1.NewAdminServiceClient(conn), func() { conn.Close() }, nil
}
