package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// The import rules of the layout (DESIGN.md, "Package layout"), written once.
// Paths are relative to the module; a pattern ending in "/..." matches the
// folder and everything below it. Each rule names the packages it governs,
// what they may not import, and whether test files count too.
const module = "github.com/directpipe/directpipe"

type importRule struct {
	name       string
	from       []string // packages the rule governs
	except     []string // packages among from that it does not govern
	mayNot     []string // module packages (or std packages, for I/O) they may not import
	onlyModule []string // when set: the only module packages they may import
	tests      bool     // test files count too
}

// productNot is what no product package may reach.
var productNot = []string{"envoy/testkit/...", "envoy/e2e/...", "examples/...", "bench/..."}

var importRules = []importRule{
	{name: "api is a leaf", from: []string{"api/..."}, onlyModule: []string{"api/..."}, tests: true},
	{name: "filter/contract is a leaf", from: []string{"filter/contract/..."}, onlyModule: []string{}, tests: true},
	// auth reads the shared contract and nothing else of ours, so the
	// module and the control plane verify tokens with the same code.
	{name: "filter/auth is a leaf", from: []string{"filter/auth/..."}, onlyModule: []string{"filter/contract/..."}, tests: true},
	// net stays allowed: translate parses addresses with it, and dialing
	// without os, net/http or syscall is not what anyone writes by accident.
	{name: "translate does no I/O", from: []string{"controlplane/translate/..."},
		mayNot: []string{"os", "os/exec", "net/http", "io/ioutil", "syscall", "github.com/fsnotify/fsnotify"}},
	// dpctl reads the type list; Envoy's API would add 10 MB to it.
	{name: "controlplane/xdstype is a leaf without Envoy's API", from: []string{"controlplane/xdstype/..."}, onlyModule: []string{},
		mayNot: []string{"github.com/envoyproxy/go-control-plane/envoy/...", "github.com/envoyproxy/go-control-plane/pkg/resource/..."}},
	{name: "controlplane/store knows only the policy (and how to read TLS files)", from: []string{"controlplane/store/..."},
		onlyModule: []string{"api/...", "controlplane/policy/...", "controlplane/mtls/..."}},
	{name: "filter never imports controlplane", from: []string{"filter/..."}, mayNot: []string{"controlplane/..."}, tests: true},
	{name: "product code stays out of the test kit, e2e, examples and bench",
		from: []string{"controlplane/...", "filter/...", "api/...", "envoy/bootstrap/...", "envoy/prestop/...", "envoy/cmd/..."}, mayNot: productNot},
	{name: "filter tests stay out of the test kit, e2e, examples and bench", from: []string{"filter/..."}, mayNot: productNot, tests: true},
}

// pkgImports is one package as `go list` sees it.
type pkgImports struct {
	path    string // relative to the module
	imports []string
	tests   []string // imports of its _test.go files
}

// match reports whether pkg (module-relative, or a std path) matches pattern.
func match(pattern, pkg string) bool {
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	return pkg == pattern
}

func matchAny(patterns []string, pkg string) bool {
	return slices.ContainsFunc(patterns, func(p string) bool { return match(p, pkg) })
}

// violations lists every import that breaks a rule.
func violations(rules []importRule, pkgs []pkgImports) []string {
	var out []string
	for _, r := range rules {
		for _, p := range pkgs {
			if !matchAny(r.from, p.path) || matchAny(r.except, p.path) {
				continue
			}
			imports := p.imports
			if r.tests {
				imports = append(slices.Clone(imports), p.tests...)
			}
			for _, imp := range imports {
				rel, ours := strings.CutPrefix(imp, module+"/")
				if ours && rel == p.path {
					continue // an external test package importing its own package
				}
				bad := false
				switch {
				case r.onlyModule != nil && ours:
					bad = !matchAny(r.onlyModule, rel)
				case ours:
					bad = matchAny(r.mayNot, rel)
				default:
					bad = matchAny(r.mayNot, imp)
				}
				if bad {
					out = append(out, fmt.Sprintf("%s: %s imports %s", r.name, p.path, imp))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// listPackages runs `go list` over the module for one GOOS.
func listPackages(t *testing.T, root, goos string) []pkgImports {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-f",
		`{{.ImportPath}}|{{join .Imports ","}}|{{join .TestImports ","}},{{join .XTestImports ","}}`, "./...")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS="+goos)
	if goos == "wasip1" {
		cmd.Env = append(cmd.Env, "GOARCH=wasm")
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list (GOOS=%s): %v", goos, err)
	}
	var pkgs []pkgImports
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Split(sc.Text(), "|")
		if len(f) != 3 {
			continue
		}
		rel, _ := strings.CutPrefix(f[0], module+"/")
		split := func(s string) []string {
			return slices.DeleteFunc(strings.Split(s, ","), func(x string) bool { return x == "" })
		}
		pkgs = append(pkgs, pkgImports{path: rel, imports: split(f[1]), tests: split(f[2])})
	}
	return pkgs
}

// TestImportRules checks the real tree, for the host and for the Wasm
// target (the module mains only build for wasip1).
func TestImportRules(t *testing.T) {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, goos := range []string{"linux", "wasip1"} {
		pkgs := listPackages(t, root, goos)
		if len(pkgs) < 10 {
			t.Fatalf("GOOS=%s: go list found only %d packages", goos, len(pkgs))
		}
		for _, v := range violations(importRules, pkgs) {
			t.Errorf("GOOS=%s: %s", goos, v)
		}
	}
}

// TestImportRulesCatchViolations proves each rule fires on a tree that
// breaks it, so a rule cannot silently match nothing.
func TestImportRulesCatchViolations(t *testing.T) {
	m := func(p string) string { return module + "/" + p }
	cases := []struct {
		name string
		pkg  pkgImports
		want string // the rule that must fire
	}{
		{"api imports policy", pkgImports{path: "api/directpipe/admin/v1", imports: []string{m("controlplane/policy")}}, "api is a leaf"},
		{"contract imports auth", pkgImports{path: "filter/contract", imports: []string{m("filter/auth")}}, "filter/contract is a leaf"},
		{"auth imports httphead", pkgImports{path: "filter/auth", imports: []string{m("filter/httphead")}}, "filter/auth is a leaf"},
		{"auth test imports translate", pkgImports{path: "filter/auth", tests: []string{m("controlplane/translate")}}, "filter/auth is a leaf"},
		{"translate reads a file", pkgImports{path: "controlplane/translate", imports: []string{"os"}}, "translate does no I/O"},
		{"filter test reaches app", pkgImports{path: "filter/handshake", tests: []string{m("controlplane/app")}}, "filter never imports controlplane"},
		{"app imports the test kit", pkgImports{path: "controlplane/app", imports: []string{m("envoy/testkit")}}, "product code stays out of the test kit, e2e, examples and bench"},
		{"bootstrap imports examples", pkgImports{path: "envoy/bootstrap", imports: []string{m("examples/probe/voiceprobe")}}, "product code stays out of the test kit, e2e, examples and bench"},
		{"filter test imports the test kit", pkgImports{path: "filter/tcpcheck", tests: []string{m("envoy/testkit/jwtmint")}}, "filter tests stay out of the test kit, e2e, examples and bench"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := violations(importRules, []pkgImports{c.pkg})
			if !slices.ContainsFunc(got, func(v string) bool { return strings.HasPrefix(v, c.want+":") }) {
				t.Errorf("rule %q did not fire; got %q", c.want, got)
			}
		})
	}
	// And a tree that keeps the rules passes.
	ok := []pkgImports{
		{path: "filter/auth", imports: []string{m("filter/contract"), "crypto/sha256"}},
		{path: "controlplane/translate", imports: []string{m("filter/auth"), m("api/directpipe/policy/v1")}},
		{path: "bench/latencylab", imports: []string{m("envoy/testkit")}},
	}
	if got := violations(importRules, ok); len(got) > 0 {
		t.Errorf("a tree that keeps the rules: %q", got)
	}
}
