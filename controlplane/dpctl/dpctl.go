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

// usageError is a mistake in the command line: exit code 2. cmd names the
// command whose help says more ("" for dpctl's own).
type usageError struct{ msg, cmd string }

func (e usageError) Error() string { return e.msg }

func (e usageError) helpFor() string {
	if e.cmd == "" {
		return "dpctl help"
	}
	return "dpctl " + e.cmd + " -h"
}

// helpShown ends a command that printed its help, as asked: exit code 0.
type helpShown struct{}

func (helpShown) Error() string { return "help shown" }

// Run runs dpctl with args (without the program name) and returns the exit
// code: 0 on success, 1 on an error, 2 on a usage mistake, 3 for audit
// findings at or above --fail-on.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := defaultGlobals()
	fs := flag.NewFlagSet("dpctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return 0
		}
		fmt.Fprintf(stderr, "dpctl: %v (dpctl help for help)\n", err)
		return 2
	}
	err := dispatch(ctx, g, fs.Args(), stdout)
	var ue usageError
	var fe findingsError
	var he helpShown
	switch {
	case err == nil, errors.As(err, &he):
		return 0
	case errors.As(err, &fe):
		fmt.Fprintf(stderr, "dpctl: %v\n", err)
		return 3
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "dpctl: %v (%s for help)\n", err, ue.helpFor())
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

// opts are the flags of the commands, each command registering its own.
type opts struct {
	file, revision, node, typ, to string
	identity, auth                string
	follow, allowDrain, offline   bool
	clientOnly                    bool
	wait                          time.Duration
}

func dispatch(ctx context.Context, g *globals, args []string, out io.Writer) error {
	if len(args) == 0 {
		return usageError{msg: "a command is required"}
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help":
		return helpCommand(out, rest)
	case "audit":
		return auditCmd(ctx, g, rest, out)
	case "certs":
		return certsCommand(ctx, rest, out)
	case "completion":
		return completionCommand(out, rest)
	}
	if (name == "top" || name == "streams" || name == "drain" || name == "rebalance") && slices.ContainsFunc(rest, isHelpFlag) {
		return helpCommand(out, []string{strings.Replace(name, "streams", "top", 1)})
	}
	switch name {
	case "top", "streams":
		return streamsCmd(ctx, g, rest, out)
	case "drain":
		return drainCmd(ctx, g, rest, out)
	case "rebalance":
		return rebalanceCmd(ctx, g, rest, out)
	}
	if group := groupOf(name); group != nil {
		if len(rest) == 0 || isHelpFlag(rest[0]) {
			if len(rest) > 0 {
				printGroupHelp(out, name)
				return helpShown{}
			}
			return usageError{msg: fmt.Sprintf("%s needs one of: %s", name, strings.Join(group, ", ")), cmd: name}
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	cmd := lookup(name)
	if cmd == nil {
		return usageError{msg: fmt.Sprintf("unknown command %q", name)}
	}
	fs := flag.NewFlagSet("dpctl "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	o := &opts{wait: defaultApplyWait}
	cmd.flags(fs, o)
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(out, cmd, fs)
			return helpShown{}
		}
		return usageError{msg: err.Error(), cmd: name}
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), cmd: name}
	}
	if g.output != "table" && g.output != "json" && g.output != "yaml" {
		return usageError{msg: fmt.Sprintf("-o %s: want table, json or yaml", g.output)}
	}
	if err := cmd.check(o); err != nil {
		return usageError{msg: err.Error(), cmd: name}
	}
	if o.wait < 0 || o.wait > maxApplyWait {
		return usageError{msg: fmt.Sprintf("--wait %s: want 0 to %s", o.wait, maxApplyWait), cmd: name}
	}

	// Local checks first: a broken file never costs a round trip.
	var local *localPolicy
	if o.file != "" {
		var err error
		if local, err = readPolicy(o.file); err != nil {
			return err
		}
	}
	c := &cli{g: g, out: out}
	switch name {
	case "policy validate":
		if o.offline {
			return c.policyValidateOffline(local)
		}
	case "apikey new":
		return c.apikeyNew(o.identity, o.auth)
	case "version":
		if o.clientOnly {
			return c.version(ctx, false)
		}
	}
	client, closeConn, err := dial(g)
	if err != nil {
		return err
	}
	defer closeConn()
	c.client = client
	if name == "events" {
		return c.events(ctx)
	}
	// An apply's call lasts as long as its wait for the Envoys' answers.
	limit := g.timeout
	if name == "policy apply" || name == "policy rollback" {
		limit += o.wait
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
	case "version":
		return c.version(ctx, true)
	case "policy get":
		return c.policyGet(ctx)
	case "policy validate":
		return c.policyValidate(ctx, local)
	case "policy diff":
		return c.policyApply(ctx, local, "", true, false, 0)
	case "policy apply":
		return c.policyApply(ctx, local, o.revision, false, o.allowDrain, o.wait)
	case "policy history":
		return c.policyHistory(ctx)
	case "policy rollback":
		return c.policyRollback(ctx, o.to, o.allowDrain, o.wait)
	case "config":
		return c.config(ctx, o.node, o.typ)
	}
	return fmt.Errorf("command %q has no implementation", name)
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
