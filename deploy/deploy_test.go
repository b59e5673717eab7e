// Package deploy_test checks the Helm chart with the real helm and kubectl
// against a real kube-apiserver (envtest), and that the plain manifests are
// the chart's current rendering.
package deploy_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	"github.com/directpipe/directpipe/controlplane/dpctl"
	"github.com/directpipe/directpipe/envoy/testkit"
)

const (
	chartDir  = "helm/directpipe"
	manifests = "manifests/directpipe.yaml"
	// Release name and namespace `make manifests` renders with.
	release   = "directpipe"
	namespace = "directpipe"
)

// tool is a binary from KUBEBUILDER_ASSETS; missing ones fail the test,
// since a skipped manifest test would pass a broken chart.
func tool(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run make k8s-test-tools and export KUBEBUILDER_ASSETS=$PWD/.tools/k8s")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s is missing (make k8s-test-tools builds it): %v", name, err)
	}
	return p
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

func render(t *testing.T) []byte {
	return run(t, tool(t, "helm"), "template", release, chartDir, "--namespace", namespace, "--include-crds")
}

func TestHelmLint(t *testing.T) {
	run(t, tool(t, "helm"), "lint", "--strict", chartDir)
}

func TestManifestsUpToDate(t *testing.T) {
	want := render(t)
	got, err := os.ReadFile(manifests)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run make manifests", manifests)
	}
}

// startAPIServer starts envtest with the chart's CRDs and returns it and
// an administrator's kubeconfig file.
func startAPIServer(t *testing.T) (*envtest.Environment, string) {
	t.Helper()
	// The Gateway API's CRDs too, as a cluster serving Gateways has them,
	// so RBAC answers for their kinds.
	gatewayCRDs, err := testkit.GatewayAPICRDs()
	if err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{CRDDirectoryPaths: append([]string{filepath.Join(chartDir, "crds")}, gatewayCRDs...), ErrorIfCRDPathMissing: true}
	if _, err := env.Start(); err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	return env, userKubeconfig(t, env, envtest.User{Name: "deploy-test", Groups: []string{"system:masters"}})
}

// userKubeconfig writes a kubeconfig file for a user of env.
func userKubeconfig(t *testing.T, env *envtest.Environment, u envtest.User) string {
	t.Helper()
	user, err := env.AddUser(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.CreateTemp(t.TempDir(), "kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(kc); err != nil {
		t.Fatal(err)
	}
	return f.Name()
}

// TestChartOnAPIServer has a real API server validate and admit every rendered
// object: schemas, RBAC rules naming real verbs, the PDB, the probes.
func TestChartOnAPIServer(t *testing.T) {
	kubectl := tool(t, "kubectl")
	env, kubeconfig := startAPIServer(t)
	kube := func(args ...string) []byte {
		return run(t, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	}
	kube("create", "namespace", namespace)

	rendered := filepath.Join(t.TempDir(), "rendered.yaml")
	if err := os.WriteFile(rendered, render(t), 0o600); err != nil {
		t.Fatal(err)
	}
	native := filepath.Join(t.TempDir(), "native.yaml")
	if err := os.WriteFile(native, renderNative(t), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{rendered, native, manifests} {
		out := string(kube("apply", "--dry-run=server", "-f", file))
		for _, obj := range []string{
			"deployment.apps/directpipe-control-plane",
			"deployment.apps/directpipe-envoy",
			"job.batch/directpipe-certgen",
			"serviceaccount/directpipe-certgen",
			"role.rbac.authorization.k8s.io/directpipe-certgen",
			"rolebinding.rbac.authorization.k8s.io/directpipe-certgen",
			"poddisruptionbudget.policy/directpipe-control-plane",
			"service/directpipe-control-plane",
			"serviceaccount/directpipe-control-plane",
			"role.rbac.authorization.k8s.io/directpipe-control-plane",
			"rolebinding.rbac.authorization.k8s.io/directpipe-control-plane",
			"clusterrole.rbac.authorization.k8s.io/directpipe-directpipe-control-plane",
			"customresourcedefinition.apiextensions.k8s.io/voiceroutes.directpipe.io",
		} {
			if !strings.Contains(out, obj+" ") {
				t.Errorf("%s: apply --dry-run=server did not admit %s:\n%s", file, obj, out)
			}
		}
	}

	// The Role grants what docs/kubernetes.md lists and nothing more: the
	// API server's own RBAC answers for the service account.
	kube("apply", "-f", manifests)
	sa := "system:serviceaccount:" + namespace + ":" + release + "-control-plane"
	for _, c := range []struct {
		verb, resource string
		ns             string
		allowed        bool
	}{
		{"watch", "voiceroutes.directpipe.io", namespace, true},
		{"list", "voicebackends.directpipe.io", namespace, true},
		{"get", "handshakepolicies.directpipe.io", namespace, true},
		{"update", "voiceroutes.directpipe.io/status", namespace, true},
		{"update", "handshakepolicies.directpipe.io/status", namespace, true},
		{"watch", "services", namespace, true},
		{"list", "endpointslices.discovery.k8s.io", namespace, true},
		{"get", "secrets", namespace, true},
		{"create", "leases.coordination.k8s.io", namespace, true},
		{"update", "leases.coordination.k8s.io", namespace, true},
		{"patch", "events", namespace, true},
		{"watch", "httproutes.gateway.networking.k8s.io", namespace, true},
		{"update", "gateways.gateway.networking.k8s.io/status", namespace, true},
		{"list", "gatewayclasses.gateway.networking.k8s.io", "", true},
		{"update", "gatewayclasses.gateway.networking.k8s.io/status", "", true},
		{"update", "httproutes.gateway.networking.k8s.io", namespace, false},
		{"delete", "gatewayclasses.gateway.networking.k8s.io", "", false},
		{"list", "httproutes.gateway.networking.k8s.io", "default", false},
		{"update", "voiceroutes.directpipe.io", namespace, false},
		{"delete", "voicebackends.directpipe.io", namespace, false},
		{"patch", "voiceroutes.directpipe.io/status", namespace, false},
		{"delete", "leases.coordination.k8s.io", namespace, false},
		{"create", "secrets", namespace, false},
		{"list", "pods", namespace, false},
		{"get", "secrets", "default", false},
		{"list", "voiceroutes.directpipe.io", "default", false},
	} {
		resource, sub, _ := strings.Cut(c.resource, "/")
		args := []string{"auth", "can-i", c.verb, resource, "--as", sa, "-n", c.ns}
		if sub != "" {
			args = append(args, "--subresource", sub)
		}
		canI(t, kubectl, kubeconfig, args, c.allowed)
	}

	// The certgen Job may create Secrets in its namespace and read the two
	// it makes: it cannot read the others, list, change or delete any.
	certgen := "system:serviceaccount:" + namespace + ":" + release + "-certgen"
	for _, c := range []struct {
		verb, resource, ns string
		allowed            bool
	}{
		{"create", "secrets", namespace, true},
		{"get", "secrets/directpipe-server-tls", namespace, true},
		{"get", "secrets/directpipe-node-tls", namespace, true},
		{"get", "secrets/someone-elses", namespace, false},
		{"list", "secrets", namespace, false},
		{"update", "secrets/directpipe-node-tls", namespace, false},
		{"patch", "secrets/directpipe-server-tls", namespace, false},
		{"delete", "secrets/directpipe-server-tls", namespace, false},
		{"create", "secrets", "default", false},
		{"create", "configmaps", namespace, false},
	} {
		canI(t, kubectl, kubeconfig, []string{"auth", "can-i", c.verb, c.resource, "--as", certgen, "-n", c.ns}, c.allowed)
	}

	// The Job's own command, as its service account (a client certificate
	// naming it): the rights above are enough, a first run creates both
	// Secrets and a second keeps them.
	args := certgenArgs(t, userKubeconfig(t, env, envtest.User{Name: certgen, Groups: []string{"system:serviceaccounts"}}))
	for _, want := range []string{"created secret directpipe/directpipe-server-tls", "kept secret directpipe/directpipe-server-tls"} {
		var stdout, stderr bytes.Buffer
		if code := dpctl.Run(t.Context(), args, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), want) {
			t.Fatalf("dpctl %s: exit %d, want %q\n%s%s", strings.Join(args, " "), code, want, stdout.String(), stderr.String())
		}
	}
	rv := kube("get", "secret", "directpipe-node-tls", "-n", namespace, "-o", "jsonpath={.metadata.resourceVersion}")
	var stdout, stderr bytes.Buffer
	dpctl.Run(t.Context(), args, &stdout, &stderr)
	if again := kube("get", "secret", "directpipe-node-tls", "-n", namespace, "-o", "jsonpath={.metadata.resourceVersion}"); !bytes.Equal(rv, again) {
		t.Errorf("a rerun of the Job rewrote the node Secret (resourceVersion %s, was %s)", again, rv)
	}
}

// certgenArgs are the rendered Job's dpctl arguments, with a kubeconfig in
// place of the pod's service account.
func certgenArgs(t *testing.T, kubeconfig string) []string {
	t.Helper()
	out := run(t, tool(t, "helm"), "template", release, chartDir, "--namespace", namespace, "--show-only", "templates/certgen.yaml")
	for doc := range bytes.SplitSeq(out, []byte("\n---\n")) {
		var job struct {
			Kind string `json:"kind"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Command []string `json:"command"`
							Args    []string `json:"args"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &job); err != nil {
			t.Fatal(err)
		}
		if job.Kind != "Job" {
			continue
		}
		c := job.Spec.Template.Spec.Containers[0]
		if len(c.Command) != 2 || c.Command[0] != "dpctl" {
			t.Fatalf("the certgen Job runs %q, not dpctl", c.Command)
		}
		return append(append(c.Command[1:], c.Args...), "-kubeconfig", kubeconfig)
	}
	t.Fatal("no Job in templates/certgen.yaml")
	return nil
}

// canI asks the API server's RBAC a kubectl auth can-i question.
func canI(t *testing.T, kubectl, kubeconfig string, args []string, allowed bool) {
	t.Helper()
	// can-i exits 1 for "no", so read its answer rather than its status.
	out, _ := exec.CommandContext(t.Context(), kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...).Output()
	if got := strings.TrimSpace(string(out)) == "yes"; got != allowed {
		t.Errorf("kubectl %s: %v, want %v (%q)", strings.Join(args, " "), got, allowed, out)
	}
}
