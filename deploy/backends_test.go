package deploy_test

import (
	"bytes"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestBackendNamespaces: controlPlane.backendNamespaces passes the
// namespaces to the control plane and gives its service account, in each
// of them, read access to what the store watches there (Services,
// EndpointSlices, ReferenceGrants) and nothing else.
func TestBackendNamespaces(t *testing.T) {
	out := run(t, tool(t, "helm"), "template", release, chartDir, "--namespace", namespace,
		"--set", "controlPlane.backendNamespaces={agents,shared}")
	var roles []rbacv1.Role
	var bindings []rbacv1.RoleBinding
	var cp appsv1.Deployment
	for doc := range bytes.SplitSeq(out, []byte("\n---\n")) {
		var kind struct{ Kind string }
		if err := yaml.Unmarshal(doc, &kind); err != nil {
			t.Fatal(err)
		}
		switch kind.Kind {
		case "Role":
			var r rbacv1.Role
			if err := yaml.Unmarshal(doc, &r); err != nil {
				t.Fatal(err)
			}
			roles = append(roles, r)
		case "RoleBinding":
			var b rbacv1.RoleBinding
			if err := yaml.Unmarshal(doc, &b); err != nil {
				t.Fatal(err)
			}
			bindings = append(bindings, b)
		case "Deployment":
			var d appsv1.Deployment
			if err := yaml.Unmarshal(doc, &d); err != nil {
				t.Fatal(err)
			}
			if strings.HasSuffix(d.Name, "-control-plane") {
				cp = d
			}
		}
	}
	if len(cp.Spec.Template.Spec.Containers) == 0 || !slices.Contains(cp.Spec.Template.Spec.Containers[0].Args, "-kube-backend-namespaces=agents,shared") {
		t.Errorf("the control plane is not told the back-end namespaces: %v", cp.Spec.Template.Spec.Containers)
	}
	for _, ns := range []string{"agents", "shared"} {
		var role *rbacv1.Role
		for i := range roles {
			if roles[i].Namespace == ns {
				role = &roles[i]
			}
		}
		if role == nil {
			t.Errorf("no Role in %s", ns)
			continue
		}
		var granted []string
		for _, r := range role.Rules {
			if !slices.Equal(r.Verbs, []string{"get", "list", "watch"}) {
				t.Errorf("%s: verbs %v on %v: read only", ns, r.Verbs, r.Resources)
			}
			granted = append(granted, r.Resources...)
		}
		slices.Sort(granted)
		if want := []string{"endpointslices", "referencegrants", "services"}; !slices.Equal(granted, want) {
			t.Errorf("%s: the Role grants %v, want %v", ns, granted, want)
		}
		bound := false
		for _, b := range bindings {
			if b.Namespace == ns && b.RoleRef.Name == role.Name && len(b.Subjects) == 1 &&
				b.Subjects[0].Namespace == namespace && b.Subjects[0].Name == cp.Spec.Template.Spec.ServiceAccountName {
				bound = true
			}
		}
		if !bound {
			t.Errorf("%s: the Role is not bound to the control plane's service account %q", ns, cp.Spec.Template.Spec.ServiceAccountName)
		}
	}
}
