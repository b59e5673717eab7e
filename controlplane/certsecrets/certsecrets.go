// Package certsecrets stores a deployment's certificates as Kubernetes
// Secrets, as the Helm chart's certgen Job does with `dpctl certs
// -secrets-namespace`: the control plane's and the Envoys', from one new
// CA. Secrets that exist are never overwritten, so a Job that runs again
// (every helm upgrade) keeps the certificates in use.
//
// It speaks the API server's REST API itself (two calls), so that dpctl
// does not link client-go, which would double its size.
package certsecrets

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
)

// Names of the Secrets and of the node certificate they hold. The keys
// inside are the ones the chart mounts: ca.crt, server.crt, server.key for
// the control plane; ca.crt, tls.crt, tls.key for the Envoys.
type Names struct {
	Server, Node string
	// NodeID is the node id the Envoys' certificate names.
	NodeID string
}

// Plan is what a missing pair of Secrets is made from.
type Plan struct {
	Names
	// Hosts are the control plane's names besides certs.ServerName (its
	// Service's DNS names).
	Hosts []string
	// Identity is the node SAN pattern (certs.DefaultNodeIdentity when
	// empty).
	Identity string
	Validity time.Duration
}

// Secret is an Opaque Secret to create.
type Secret struct {
	Name string
	Data map[string][]byte
}

// ErrExists is what API.Create returns for a Secret that exists.
var ErrExists = errors.New("the Secret exists")

// API is a namespace's Secrets, as Ensure uses them.
type API interface {
	Exists(ctx context.Context, name string) (bool, error)
	// Create makes the Secret, or returns ErrExists and changes nothing.
	Create(ctx context.Context, s Secret) error
}

// Result says what Ensure did.
type Result struct {
	Created, Kept []string
}

// Ensure creates both Secrets when neither exists, and leaves them as they
// are when both do. When only one exists it changes nothing and says so:
// a new CA for the missing one would not verify the other, and the CA's key
// is not kept in the cluster.
func Ensure(ctx context.Context, api API, p Plan) (Result, error) {
	if p.Server == "" || p.Node == "" || p.Server == p.Node {
		return Result{}, errors.New("certsecrets: two distinct Secret names are needed")
	}
	var existing, missing []string
	for _, name := range []string{p.Server, p.Node} {
		ok, err := api.Exists(ctx, name)
		switch {
		case err != nil:
			return Result{}, fmt.Errorf("certsecrets: reading Secret %s: %w", name, err)
		case ok:
			existing = append(existing, name)
		default:
			missing = append(missing, name)
		}
	}
	switch len(missing) {
	case 0:
		return Result{Kept: existing}, nil
	case 1:
		return Result{Kept: existing}, fmt.Errorf("certsecrets: Secret %s exists but %s does not, so nothing was changed: "+
			"delete %s too to issue both again from a new CA, or create %s from the same CA",
			existing[0], missing[0], existing[0], missing[0])
	}
	secrets, err := build(p)
	if err != nil {
		return Result{}, err
	}
	var res Result
	for _, s := range secrets {
		if err := api.Create(ctx, s); err != nil {
			if errors.Is(err, ErrExists) {
				err = fmt.Errorf("%w: made by someone else meanwhile; check that %s and %s come from one CA", err, p.Server, p.Node)
			}
			return res, fmt.Errorf("certsecrets: creating Secret %s (created before it: %s): %w", s.Name, strings.Join(res.Created, ", "), err)
		}
		res.Created = append(res.Created, s.Name)
	}
	return res, nil
}

// build issues a new CA, the server certificate and the node certificate,
// as the two Secrets.
func build(p Plan) ([]Secret, error) {
	if p.Validity <= 0 {
		p.Validity = 365 * 24 * time.Hour
	}
	ca, err := certs.NewAuthority("directpipe CA", 10*p.Validity)
	if err != nil {
		return nil, err
	}
	serverCert, serverKey, err := ca.Issue(certs.ServerRequest(p.Hosts, p.Validity))
	if err != nil {
		return nil, err
	}
	req, err := certs.NodeRequest(p.Identity, p.NodeID, p.Validity)
	if err != nil {
		return nil, err
	}
	nodeCert, nodeKey, err := ca.Issue(req)
	if err != nil {
		return nil, err
	}
	return []Secret{
		{Name: p.Server, Data: map[string][]byte{"ca.crt": ca.CertPEM, "server.crt": serverCert, "server.key": serverKey}},
		{Name: p.Node, Data: map[string][]byte{"ca.crt": ca.CertPEM, "tls.crt": nodeCert, "tls.key": nodeKey}},
	}, nil
}
