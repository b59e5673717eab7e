package dpctl

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
)

// certsCommand writes the certificates of a deployment: it runs locally
// and needs no control plane.
func certsCommand(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpctl certs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var p certs.Plan
	var hosts, nodes string
	var days int
	fs.StringVar(&p.Dir, "dir", "", "directory to write ca.crt, server.crt and nodes/ID.crt (with keys)")
	fs.StringVar(&hosts, "hosts", "127.0.0.1,localhost", "the control plane's host names and addresses, comma-separated")
	fs.StringVar(&nodes, "nodes", "", "Envoy node ids to issue client certificates for, comma-separated")
	fs.StringVar(&p.Identity, "identity", certs.DefaultNodeIdentity, "SAN of a node certificate; {node} is the node id (a URI SAN with a scheme, else DNS)")
	fs.IntVar(&days, "days", 365, "validity of the server and node certificates, in days")
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if p.Dir == "" {
		return usageError{"certs needs -dir DIR"}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	if days <= 0 {
		return usageError{"-days must be positive"}
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
