// Package bootstrap renders the Envoy bootstrap that points Envoy at the
// directpipe control plane. `make run` and the end-to-end tests use the
// same template.
package bootstrap

import (
	"bytes"
	_ "embed"
	"fmt"
	"text/template"
)

//go:embed bootstrap.yaml.tmpl
var text string

var tmpl = template.Must(template.New("bootstrap").Parse(text))

// Params fill the template.
type Params struct {
	NodeID    string
	Cluster   string
	AdminPort int
	XDSHost   string
	XDSPort   int
	// Delta selects incremental xDS (DELTA_GRPC) over state of the world.
	Delta bool
}

// Render returns the bootstrap YAML.
func Render(p Params) ([]byte, error) {
	if p.NodeID == "" || p.Cluster == "" || p.AdminPort == 0 || p.XDSPort == 0 {
		return nil, fmt.Errorf("bootstrap: node id, cluster, admin port and xDS port are required")
	}
	if p.XDSHost == "" {
		p.XDSHost = "127.0.0.1"
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, p); err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return buf.Bytes(), nil
}
