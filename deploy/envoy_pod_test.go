package deploy_test

import (
	"bytes"
	"path"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestEnvoyPodWiring checks that the rendered Envoy pod runs the pieces
// the e2e tests prove (the preStop hook, envoy-bootstrap's readiness
// listener and SDS files) the way those tests run them: the hook is the
// ConfigMap's script and gives up before the grace period ends, it
// reaches the admin socket the bootstrap names, the probe reads the
// readiness listener's port, and the SDS files and certificates are on
// volumes the Envoy container mounts.
func TestEnvoyPodWiring(t *testing.T) {
	out := run(t, tool(t, "helm"), "template", release, chartDir, "--namespace", namespace, "--show-only", "templates/envoy.yaml")
	var d appsv1.Deployment
	for doc := range bytes.SplitSeq(out, []byte("\n---\n")) {
		var kind struct{ Kind string }
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			t.Fatal(err)
		}
		if kind.Kind == "Deployment" {
			if err := yaml.Unmarshal(doc, &d); err != nil {
				t.Fatal(err)
			}
		}
	}
	pod := d.Spec.Template.Spec
	if len(pod.InitContainers) != 1 || len(pod.Containers) != 1 {
		t.Fatalf("want one init container and one container, got %d and %d", len(pod.InitContainers), len(pod.Containers))
	}
	envoy := pod.Containers[0]
	flags := map[string]string{}
	for _, f := range strings.Fields(strings.Join(pod.InitContainers[0].Args, " ")) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "-") {
			flags[k] = v
		}
	}

	// Where each path lands: the volume the Envoy container mounts there.
	volumeAt := func(p string) *corev1.Volume {
		for _, m := range envoy.VolumeMounts {
			if p == m.MountPath || strings.HasPrefix(p, m.MountPath+"/") {
				for i := range pod.Volumes {
					if pod.Volumes[i].Name == m.Name {
						return &pod.Volumes[i]
					}
				}
			}
		}
		t.Errorf("the Envoy container mounts nothing at %s", p)
		return &corev1.Volume{}
	}

	hook := envoy.Lifecycle.PreStop.Exec.Command
	if len(hook) != 2 || hook[0] != "sh" || path.Base(hook[1]) != "prestop.sh" {
		t.Fatalf("preStop runs %q", hook)
	}
	if cm := volumeAt(hook[1]).ConfigMap; cm == nil || cm.Name != release+"-envoy-hooks" {
		t.Errorf("the hook is not the ConfigMap's script: %+v", volumeAt(hook[1]))
	}
	env := map[string]string{}
	for _, e := range envoy.Env {
		env[e.Name] = e.Value
	}
	deadline, err := strconv.Atoi(env["DRAIN_DEADLINE_SECONDS"])
	if grace := *pod.TerminationGracePeriodSeconds; err != nil || deadline <= 0 || int64(deadline) >= grace {
		t.Errorf("hook deadline %q, grace period %d: the hook must give up first", env["DRAIN_DEADLINE_SECONDS"], grace)
	}
	if want := "unix:" + flags["-admin-socket"]; env["ENVOY_ADMIN"] != want {
		t.Errorf("the hook reaches %q, the bootstrap puts admin at %q", env["ENVOY_ADMIN"], want)
	}
	volumeAt(flags["-admin-socket"])

	probe := envoy.ReadinessProbe.HTTPGet
	if probe == nil || probe.Path != "/ready" {
		t.Fatalf("readiness probe %+v", envoy.ReadinessProbe)
	}
	_, readyPort, _ := strings.Cut(flags["-ready-addr"], ":")
	for _, p := range envoy.Ports {
		if p.Name == probe.Port.String() && strconv.Itoa(int(p.ContainerPort)) != readyPort {
			t.Errorf("the probe reads port %d, the readiness listener is on %s", p.ContainerPort, readyPort)
		}
	}

	if sds := flags["-sds-dir"]; sds == "" || volumeAt(sds).EmptyDir == nil {
		t.Errorf("SDS files go to %q, which is not the config volume the Envoy container mounts", sds)
	}
	for _, f := range []string{"-tls-ca", "-tls-cert", "-tls-key"} {
		if s := volumeAt(flags[f]).Secret; s == nil || s.SecretName != "directpipe-node-tls" {
			t.Errorf("%s=%s is not in the node Secret's volume", f, flags[f])
		}
	}
}
