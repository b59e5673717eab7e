package deploy_test

import (
	"bytes"
	"context"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/directpipe/directpipe/envoy/bootstrap"
)

// renderNative is the chart rendered with envoy.filter native.
func renderNative(t *testing.T) []byte {
	return run(t, tool(t, "helm"), "template", release, chartDir, "--namespace", namespace, "--include-crds",
		"--set", "envoy.filter=native")
}

// deployments are the Deployments in a rendering, by name.
func deployments(t *testing.T, out []byte) map[string]appsv1.Deployment {
	t.Helper()
	found := map[string]appsv1.Deployment{}
	for doc := range bytes.SplitSeq(out, []byte("\n---\n")) {
		var kind struct{ Kind string }
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			t.Fatal(err)
		}
		if kind.Kind != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := yaml.Unmarshal(doc, &d); err != nil {
			t.Fatal(err)
		}
		found[d.Name] = d
	}
	return found
}

// TestNativeFilterValue: envoy.filter native makes the Envoy pods ask for
// the dynamic module (envoy-bootstrap -filter native), gives the control
// plane the library to serve them (-native, beside -wasm in its image),
// and gives Envoy a writable /tmp, where it keeps the library it fetches
// (its root filesystem is read-only). The default, wasm, renders none of
// that, and any other value is refused before anything is applied.
func TestNativeFilterValue(t *testing.T) {
	for _, tc := range []struct {
		name   string
		out    []byte
		native bool
	}{
		{"native", renderNative(t), true},
		{"default", render(t), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := deployments(t, tc.out)
			cp, envoy := ds[release+"-control-plane"], ds[release+"-envoy"]
			if len(cp.Spec.Template.Spec.Containers) != 1 || len(envoy.Spec.Template.Spec.InitContainers) != 1 || len(envoy.Spec.Template.Spec.Containers) != 1 {
				t.Fatalf("the rendering lacks the control plane or the Envoy Deployment: %v", ds)
			}
			cpFlags := flagValues(cp.Spec.Template.Spec.Containers[0].Args)
			envoyFlags := flagValues(strings.Fields(strings.Join(envoy.Spec.Template.Spec.InitContainers[0].Args, " ")))

			gotFilter, hasFilter := envoyFlags["-filter"]
			gotNative, hasNative := cpFlags["-native"]
			if !tc.native {
				if hasFilter || hasNative {
					t.Errorf("the default rendering names a filter (-filter=%q) or a native library (-native=%q)", gotFilter, gotNative)
				}
				return
			}
			if gotFilter != bootstrap.FilterNative {
				t.Errorf("envoy-bootstrap -filter=%q, want %q: %v", gotFilter, bootstrap.FilterNative, envoy.Spec.Template.Spec.InitContainers[0].Args)
			}
			if path.Base(gotNative) != "libdirectpipe_native.so" || path.Dir(gotNative) != path.Dir(cpFlags["-wasm"]) {
				t.Errorf("the control plane serves -native=%q, want libdirectpipe_native.so beside -wasm=%q", gotNative, cpFlags["-wasm"])
			}
			pod := envoy.Spec.Template.Spec
			tmp := slices.IndexFunc(pod.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/tmp" })
			if tmp < 0 || pod.Containers[0].VolumeMounts[tmp].ReadOnly {
				t.Fatalf("Envoy has no writable /tmp for the fetched library: %v", pod.Containers[0].VolumeMounts)
			}
			name := pod.Containers[0].VolumeMounts[tmp].Name
			if v := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == name && v.EmptyDir != nil }); v < 0 {
				t.Errorf("/tmp is not an emptyDir: %v", pod.Volumes)
			}
		})
	}

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, tool(t, "helm"), "template", release, chartDir, "--set", "envoy.filter=Native").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "want wasm or native") {
		t.Errorf("helm rendered envoy.filter=Native (%v):\n%.500s", err, out)
	}
}

// flagValues are the -name=value arguments in args.
func flagValues(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(k, "-") {
			out[k] = v
		}
	}
	return out
}
