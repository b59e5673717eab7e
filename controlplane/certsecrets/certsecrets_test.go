package certsecrets

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// TestEnsureOnAPIServer runs Ensure through the REST client against a real
// API server (envtest): a first run creates both Secrets from one CA, a
// second keeps them byte for byte, and a namespace holding only one of
// them gets nothing new and keeps that one as it is.
func TestEnsureOnAPIServer(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run make k8s-test-tools and export KUBEBUILDER_ASSETS=$PWD/.tools/k8s")
	}
	env := &envtest.Environment{}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	user, err := env.AddUser(envtest.User{Name: "certgen-test", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	k8s, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, ns := range []string{"fresh", "partial"} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	get := func(ns, name string) *corev1.Secret {
		var s corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &s); err != nil {
			t.Fatalf("secret %s/%s: %v", ns, name, err)
		}
		return &s
	}
	plan := Plan{Names: Names{Server: "dp-server", Node: "dp-node", NodeID: "envoy"}, Hosts: []string{"dp-control-plane.fresh.svc"}}

	t.Run("none: both from one CA", func(t *testing.T) {
		api, err := Client(kubeconfig, "fresh")
		if err != nil {
			t.Fatal(err)
		}
		res, err := Ensure(ctx, api, plan)
		if err != nil || strings.Join(res.Created, ",") != "dp-server,dp-node" || len(res.Kept) != 0 {
			t.Fatalf("first run: %+v, %v", res, err)
		}
		server, node := get("fresh", "dp-server"), get("fresh", "dp-node")
		if !bytes.Equal(server.Data["ca.crt"], node.Data["ca.crt"]) {
			t.Fatal("the two Secrets carry different CAs")
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(server.Data["ca.crt"])
		for _, c := range []struct {
			pem   []byte
			usage x509.ExtKeyUsage
			name  string
		}{
			{server.Data["server.crt"], x509.ExtKeyUsageServerAuth, "dp-control-plane.fresh.svc"},
			{node.Data["tls.crt"], x509.ExtKeyUsageClientAuth, ""},
		} {
			blk, _ := pem.Decode(c.pem)
			if blk == nil {
				t.Fatalf("not PEM: %q", c.pem)
			}
			cert, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{c.usage}, DNSName: c.name}); err != nil {
				t.Errorf("%s does not verify with the Secrets' CA: %v", cert.Subject.CommonName, err)
			}
		}
		if len(server.Data["server.key"]) == 0 || len(node.Data["tls.key"]) == 0 {
			t.Error("a key is missing")
		}

		// Again, as at every helm upgrade: nothing changes.
		res, err = Ensure(ctx, api, plan)
		if err != nil || len(res.Created) != 0 || strings.Join(res.Kept, ",") != "dp-server,dp-node" {
			t.Fatalf("second run: %+v, %v", res, err)
		}
		for name, was := range map[string]*corev1.Secret{"dp-server": server, "dp-node": node} {
			if now := get("fresh", name); now.ResourceVersion != was.ResourceVersion {
				t.Errorf("%s was written again (resourceVersion %s, was %s)", name, now.ResourceVersion, was.ResourceVersion)
			}
		}
	})

	t.Run("one of two: nothing changes", func(t *testing.T) {
		mine := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "dp-node", Namespace: "partial"},
			Data: map[string][]byte{"tls.crt": []byte("the operator's own")}}
		if err := k8s.Create(ctx, mine); err != nil {
			t.Fatal(err)
		}
		api, err := Client(kubeconfig, "partial")
		if err != nil {
			t.Fatal(err)
		}
		res, err := Ensure(ctx, api, plan)
		if err == nil || !strings.Contains(err.Error(), "dp-node exists but dp-server does not") || len(res.Created) != 0 {
			t.Fatalf("Ensure with one Secret of two: %+v, %v", res, err)
		}
		if now := get("partial", "dp-node"); now.ResourceVersion != mine.ResourceVersion || string(now.Data["tls.crt"]) != "the operator's own" {
			t.Error("the existing Secret was changed")
		}
		var s corev1.Secret
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "partial", Name: "dp-server"}, &s); err == nil {
			t.Error("the missing Secret was created")
		}
	})
}

// racing is a namespace where someone else creates the second Secret
// between Ensure's look and its create.
type racing struct{ created []string }

func (r *racing) Exists(context.Context, string) (bool, error) { return false, nil }
func (r *racing) Create(_ context.Context, s Secret) error {
	if len(r.created) == 1 {
		return ErrExists
	}
	r.created = append(r.created, s.Name)
	return nil
}

func TestEnsureRace(t *testing.T) {
	r := &racing{}
	res, err := Ensure(context.Background(), r, Plan{Names: Names{Server: "a", Node: "b", NodeID: "envoy"}})
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "check that a and b come from one CA") || strings.Join(res.Created, ",") != "a" {
		t.Fatalf("%+v, %v", res, err)
	}
}

func TestEnsureRefusesBadNames(t *testing.T) {
	for _, n := range []Names{{}, {Server: "a"}, {Server: "a", Node: "a"}} {
		if _, err := Ensure(context.Background(), &racing{}, Plan{Names: n}); err == nil {
			t.Errorf("%+v accepted", n)
		}
	}
}

func TestClientRefusesKubeconfigs(t *testing.T) {
	const head = "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"
	for name, c := range map[string]struct{ kubeconfig, want string }{
		"plugin":   {head + "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\nusers: [{name: u, user: {exec: {command: x}}}]\n", "plugin"},
		"insecure": {head + "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443', insecure-skip-tls-verify: true}}]\nusers: [{name: u, user: {token: t}}]\n", "insecure"},
		"http":     {head + "clusters: [{name: k, cluster: {server: 'http://127.0.0.1:8080'}}]\nusers: [{name: u, user: {token: t}}]\n", "want https"},
		"context":  {head + "clusters: []\nusers: []\n", "no cluster and user"},
	} {
		f := filepath.Join(t.TempDir(), "kubeconfig")
		if err := os.WriteFile(f, []byte(c.kubeconfig), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Client(f, "ns"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %q", name, err, c.want)
		}
	}
	if _, err := Client("", "a/b"); err == nil {
		t.Error("a namespace with a slash accepted")
	}
}
