package kube

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// crdDir holds the CRDs the Helm chart installs.
const crdDir = "../../deploy/helm/directpipe/crds"

// loadCRDs reads the chart's CRDs.
func loadCRDs(t testing.TB) map[string]*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(crdDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in %s: %v", crdDir, err)
	}
	out := map[string]*apiextensionsv1.CustomResourceDefinition{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.UnmarshalStrict(b, crd); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[crd.Spec.Names.Kind] = crd
	}
	return out
}

// TestCRDsMatchTypes keeps the hand-written schemas and the Go types in
// step: every field of one is a field of the other, at every depth.
func TestCRDsMatchTypes(t *testing.T) {
	crds := loadCRDs(t)
	for kind, spec := range map[string]any{"VoiceRoute": VoiceRouteSpec{}, "VoiceBackend": VoiceBackendSpec{}, "HandshakePolicy": HandshakePolicySpec{}} {
		crd, ok := crds[kind]
		if !ok {
			t.Errorf("no CRD for %s", kind)
			continue
		}
		if crd.Spec.Group != GroupVersion.Group || crd.Spec.Versions[0].Name != GroupVersion.Version {
			t.Errorf("%s: group/version %s/%s", kind, crd.Spec.Group, crd.Spec.Versions[0].Name)
		}
		props := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties
		compare(t, kind+".spec", reflect.TypeOf(spec), props["spec"])
		compare(t, kind+".status", reflect.TypeOf(Status{}), props["status"])
	}
}

var durationType, timeType = reflect.TypeOf(metav1.Duration{}), reflect.TypeOf(metav1.Time{})

func compare(t *testing.T, path string, typ reflect.Type, s apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	switch {
	case typ == durationType, typ == timeType:
		want(t, path, s.Type, "string")
	case typ.Kind() == reflect.Struct:
		compareFields(t, path, typ, s)
	case typ.Kind() == reflect.Slice:
		if s.Type != "array" || s.Items == nil || s.Items.Schema == nil {
			t.Errorf("%s: want an array schema, got %q", path, s.Type)
			return
		}
		compare(t, path+"[]", typ.Elem(), *s.Items.Schema)
	case typ.Kind() == reflect.Map:
		if s.Type != "object" || s.AdditionalProperties == nil || s.AdditionalProperties.Schema == nil {
			t.Errorf("%s: want a map schema", path)
		}
	case typ.Kind() == reflect.String:
		want(t, path, s.Type, "string")
	case typ.Kind() == reflect.Bool:
		want(t, path, s.Type, "boolean")
	default: // integers
		want(t, path, s.Type, "integer")
	}
}

func want(t *testing.T, path, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s: schema type %q, Go wants %q", path, got, want)
	}
}

func compareFields(t *testing.T, path string, typ reflect.Type, s apiextensionsv1.JSONSchemaProps) {
	t.Helper()
	if s.Type != "object" {
		t.Errorf("%s: want an object schema, got %q", path, s.Type)
		return
	}
	var goFields []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		goFields = append(goFields, name)
		ps, ok := s.Properties[name]
		if !ok {
			t.Errorf("%s.%s: in the Go type, not in the schema", path, name)
			continue
		}
		compare(t, path+"."+name, f.Type, ps)
	}
	for name := range s.Properties {
		if !slices.Contains(goFields, name) {
			t.Errorf("%s.%s: in the schema, not in the Go type", path, name)
		}
	}
}
