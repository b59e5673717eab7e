package dpctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/certsecrets"
)

// secretFlags send the certificates to Kubernetes Secrets instead of files.
type secretFlags struct {
	namespace, kubeconfig string
	names                 certsecrets.Names
}

func certsFlags(fs *flag.FlagSet, p *certs.Plan, hosts, nodes *string, days *int, sf *secretFlags) {
	fs.StringVar(&p.Dir, "dir", "", "directory to write ca.crt, server.crt and nodes/ID.crt (with keys)")
	fs.StringVar(&sf.namespace, "secrets-namespace", "", "instead of -dir: create the server and node Secrets in this namespace, unless they exist (one node id)")
	fs.StringVar(&sf.names.Server, "server-secret", "directpipe-server-tls", "with -secrets-namespace: the control plane's Secret (ca.crt, server.crt, server.key)")
	fs.StringVar(&sf.names.Node, "node-secret", "directpipe-node-tls", "with -secrets-namespace: the Envoys' Secret (ca.crt, tls.crt, tls.key)")
	fs.StringVar(&sf.kubeconfig, "kubeconfig", "", "with -secrets-namespace: kubeconfig file (default: the usual one, else the pod's service account)")
	fs.StringVar(hosts, "hosts", "127.0.0.1,localhost", "the control plane's host names and addresses, comma-separated")
	fs.StringVar(nodes, "nodes", "", "Envoy node ids to issue client certificates for, comma-separated")
	fs.StringVar(&p.Identity, "identity", certs.DefaultNodeIdentity, "SAN of a node certificate; {node} is the node id (a URI SAN with a scheme, else DNS)")
	fs.IntVar(days, "days", 365, "validity of the server and node certificates, in days")
}

// certsCommand writes the certificates of a deployment: it runs locally
// and needs no control plane.
func certsCommand(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpctl certs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var p certs.Plan
	var hosts, nodes string
	var days int
	var sf secretFlags
	certsFlags(fs, &p, &hosts, &nodes, &days, &sf)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(out, lookup("certs"), fs)
			return helpShown{}
		}
		return usageError{msg: err.Error(), cmd: "certs"}
	}
	if (p.Dir == "") == (sf.namespace == "") {
		return usageError{msg: "certs needs one of -dir DIR and -secrets-namespace NS", cmd: "certs"}
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), cmd: "certs"}
	}
	if days <= 0 {
		return usageError{msg: "-days must be positive", cmd: "certs"}
	}
	p.Hosts, p.Nodes = splitList(hosts), splitList(nodes)
	p.Validity = time.Duration(days) * 24 * time.Hour
	if sf.namespace != "" {
		return certsToSecrets(ctx, p, sf, out)
	}
	written, err := certs.Generate(p)
	if err != nil {
		return err
	}
	for _, f := range written {
		fmt.Fprintln(out, "wrote", f)
	}
	return nil
}

// certsToSecrets makes the Secrets of a Kubernetes install, keeping any
// that exist (the certgen Job runs at every helm install and upgrade).
func certsToSecrets(ctx context.Context, p certs.Plan, sf secretFlags, out io.Writer) error {
	if len(p.Nodes) != 1 {
		return usageError{msg: "-secrets-namespace needs exactly one node id in -nodes", cmd: "certs"}
	}
	api, err := certsecrets.Client(sf.kubeconfig, sf.namespace)
	if err != nil {
		return err
	}
	sf.names.NodeID = p.Nodes[0]
	res, err := certsecrets.Ensure(ctx, api, certsecrets.Plan{Names: sf.names, Hosts: p.Hosts, Identity: p.Identity, Validity: p.Validity})
	for _, n := range res.Created {
		fmt.Fprintf(out, "created secret %s/%s\n", sf.namespace, n)
	}
	for _, n := range res.Kept {
		fmt.Fprintf(out, "kept secret %s/%s (it exists)\n", sf.namespace, n)
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
