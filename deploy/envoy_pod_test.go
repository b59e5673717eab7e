package deploy_test

import (
	"bytes"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// TestEnvoyPodWiring checks that the rendered Envoy pod runs the pieces
// the e2e tests prove (the preStop hook, envoy-bootstrap's readiness
// listener and SDS files) the way those tests run them: the hook is
// envoy-bootstrap, copied by the init container into a shared volume, and
// gives up before the grace period ends, it
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

	// The hook is the program the init container copied into a volume
	// both containers mount, run as envoy/e2e TestPreStopHookCutsNoCall
	// runs it.
	hook := envoy.Lifecycle.PreStop.Exec.Command
	if len(hook) < 2 || path.Base(hook[0]) != "envoy-bootstrap" || hook[1] != "prestop" {
		t.Fatalf("preStop runs %q", hook)
	}
	if dir := flags["-hook-dir"]; dir != path.Dir(hook[0]) || volumeAt(hook[0]).EmptyDir == nil {
		t.Errorf("the hook %s is not where the init container copies envoy-bootstrap (-hook-dir=%s) on a shared emptyDir", hook[0], dir)
	}
	initMounts := false
	for _, m := range pod.InitContainers[0].VolumeMounts {
		if m.MountPath == flags["-hook-dir"] && m.Name == "hooks" && !m.ReadOnly {
			initMounts = true
		}
	}
	if !initMounts {
		t.Errorf("the init container does not mount the hooks volume writable at %s", flags["-hook-dir"])
	}
	hookFlags := map[string]string{}
	for _, a := range hook[2:] {
		k, v, _ := strings.Cut(a, "=")
		hookFlags[k] = v
	}
	deadline, err := time.ParseDuration(hookFlags["-deadline"])
	if grace := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second; err != nil || deadline <= 0 || deadline >= grace {
		t.Errorf("hook deadline %q, grace period %v: the hook must give up first", hookFlags["-deadline"], grace)
	}
	if want := "unix:" + flags["-admin-socket"]; hookFlags["-admin"] != want {
		t.Errorf("the hook reaches %q, the bootstrap puts admin at %q", hookFlags["-admin"], want)
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
