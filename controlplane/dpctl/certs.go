package dpctl

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
)

func certsFlags(fs *flag.FlagSet, p *certs.Plan, hosts, nodes *string, days *int) {
	fs.StringVar(&p.Dir, "dir", "", "directory to write ca.crt, server.crt and nodes/ID.crt (with keys)")
	fs.StringVar(hosts, "hosts", "127.0.0.1,localhost", "the control plane's host names and addresses, comma-separated")
	fs.StringVar(nodes, "nodes", "", "Envoy node ids to issue client certificates for, comma-separated")
	fs.StringVar(&p.Identity, "identity", certs.DefaultNodeIdentity, "SAN of a node certificate; {node} is the node id (a URI SAN with a scheme, else DNS)")
	fs.IntVar(days, "days", 365, "validity of the server and node certificates, in days")
}

// certsCommand writes the certificates of a deployment: it runs locally
// and needs no control plane.
func certsCommand(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpctl certs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var p certs.Plan
	var hosts, nodes string
	var days int
	certsFlags(fs, &p, &hosts, &nodes, &days)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(out, lookup("certs"), fs)
			return helpShown{}
		}
		return usageError{msg: err.Error(), cmd: "certs"}
	}
	if p.Dir == "" {
		return usageError{msg: "certs needs -dir DIR", cmd: "certs"}
	}
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), cmd: "certs"}
	}
	if days <= 0 {
		return usageError{msg: "-days must be positive", cmd: "certs"}
	}
	p.Hosts, p.Nodes = splitList(hosts), splitList(nodes)
	p.Validity = time.Duration(days) * 24 * time.Hour
	written, err := certs.Generate(p)
	if err != nil {
		return err
	}
	for _, f := range written {
		fmt.Fprintln(out, "wrote", f)
	}
	return nil
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
