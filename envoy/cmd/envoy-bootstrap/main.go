// Command envoy-bootstrap prints the Envoy bootstrap for a directpipe
// control plane.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/directpipe/directpipe/envoy/bootstrap"
)

func main() {
	var p bootstrap.Params
	flag.StringVar(&p.NodeID, "node", "envoy-local", "node id")
	flag.StringVar(&p.Cluster, "cluster", "directpipe", "node cluster")
	flag.IntVar(&p.AdminPort, "admin-port", 9901, "Envoy admin port (127.0.0.1)")
	flag.StringVar(&p.XDSHost, "xds-host", "127.0.0.1", "control plane host")
	flag.IntVar(&p.XDSPort, "xds-port", 18000, "control plane xDS port")
	flag.BoolVar(&p.Delta, "delta", false, "use delta (incremental) xDS")
	flag.Parse()
	out, err := bootstrap.Render(p)
	if err != nil {
		fmt.Fprintln(os.Stderr, "envoy-bootstrap:", err)
		os.Exit(1)
	}
	os.Stdout.Write(out)
}
