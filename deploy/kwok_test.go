package deploy_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeNode is a node kwok answers for: no kubelet, no containers; kwok
// marks its pods running and ready, and Job pods succeeded.
const fakeNode = `apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations:
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/hostname: kwok-node-0
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: zone-a
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
`

// TestManifestsReachAvailableOnKwok applies the plain manifests to a real
// API server with the real controller manager and scheduler, and kwok
// standing in for the kubelet of one fake node: the control plane and
// Envoy Deployments become Available (their pods are scheduled, despite
// the spread constraints and the PDB, and reported ready) and the certgen
// Job Complete. What runs inside the containers is not simulated: the
// e2e tests run the real processes.
func TestManifestsReachAvailableOnKwok(t *testing.T) {
	kubectl := tool(t, "kubectl")
	_, kubeconfig := startAPIServer(t)
	kube := func(args ...string) []byte {
		return run(t, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	}

	// The controllers that turn Deployments and Jobs into pods, the
	// scheduler that binds them to the node, and kwok. Nothing serves
	// beyond loopback: the controllers serve nothing at all.
	logs := t.TempDir()
	background(t, logs, tool(t, "kube-controller-manager"), "--kubeconfig="+kubeconfig, "--leader-elect=false",
		"--secure-port=0", "--use-service-account-credentials=false",
		"--controllers=deployment,replicaset,job,serviceaccount,disruption")
	background(t, logs, tool(t, "kube-scheduler"), "--kubeconfig="+kubeconfig, "--leader-elect=false", "--secure-port=0")
	background(t, logs, tool(t, "kwok"), "--kubeconfig="+kubeconfig, "--config=testdata/kwok.yaml",
		"--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--server-address=127.0.0.1:0", "--node-ip=127.0.0.1", "--cidr=10.0.0.0/24")

	node := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(node, []byte(fakeNode), 0o600); err != nil {
		t.Fatal(err)
	}
	wait := func(what string, objs ...string) {
		t.Helper()
		args := append([]string{"-n", namespace, "wait", "--for=condition=" + what, "--timeout=45s"}, objs...)
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			state, _ := exec.Command(kubectl, "--kubeconfig", kubeconfig, "-n", namespace, "get", "deploy,rs,job,pods,events", "-o", "wide").CombinedOutput()
			nodes, _ := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "nodes", "-o", "yaml").CombinedOutput()
			state = append(state, nodes...)
			t.Fatalf("kubectl wait %s: %v\n%s\n%s\n%s", strings.Join(objs, " "), err, out, state, logTails(logs))
		}
	}
	kube("apply", "-f", node)
	wait("Ready", "node/kwok-node-0")
	// The API server taints a new node not-ready; the node lifecycle
	// controller, not run here, would lift the taint once kwok reports
	// the node ready.
	kube("taint", "nodes", "kwok-node-0", "node.kubernetes.io/not-ready:NoSchedule-")
	kube("create", "namespace", namespace)
	kube("apply", "-f", manifests)
	wait("Available", "deployment/directpipe-control-plane", "deployment/directpipe-envoy")
	wait("Complete", "job/directpipe-certgen")

	// Two control plane replicas ready, as the PDB wants at least one.
	if got := string(kube("-n", namespace, "get", "deployment/directpipe-control-plane", "-o", "jsonpath={.status.readyReplicas}")); got != "2" {
		t.Errorf("control plane ready replicas: %q, want 2", got)
	}
}

// background runs a program until the end of the test, its output in a
// file of dir.
func background(t *testing.T, dir, bin string, args ...string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, filepath.Base(bin)+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		f.Close()
	})
}

// logTails is the end of each log in dir.
func logTails(dir string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		lines = lines[max(0, len(lines)-15):]
		b.WriteString("== " + filepath.Base(f) + "\n" + strings.Join(lines, "\n") + "\n")
	}
	return b.String()
}
