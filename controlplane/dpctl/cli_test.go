package dpctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
)

// TestHelp: every command answers -h, --help and `dpctl help CMD` with
// its usage and examples on stdout, exit 0, and asks no control plane.
// (`dpctl audit -h` used to exit 2 with "flag: help requested".)
func TestHelp(t *testing.T) {
	for _, c := range commands {
		for _, args := range [][]string{
			append(strings.Fields(c.name), "-h"),
			append(strings.Fields(c.name), "--help"),
			append([]string{"help"}, strings.Fields(c.name)...),
		} {
			code, out, errs := run(append([]string{"--addr", "127.0.0.1:1"}, args...)...)
			if code != 0 || errs != "" {
				t.Errorf("dpctl %s: exit %d, stderr %q", strings.Join(args, " "), code, errs)
				continue
			}
			for _, want := range []string{"Usage:\n  dpctl " + c.name, "Examples:\n  "} {
				if !strings.Contains(out, want) {
					t.Errorf("dpctl %s does not show %q:\n%s", strings.Join(args, " "), want, out)
				}
			}
		}
	}
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out, _ := run(args...)
		if code != 0 || !strings.Contains(out, "Commands:") || !strings.Contains(out, "policy apply") || !strings.Contains(out, "-addr") {
			t.Errorf("dpctl %s: exit %d:\n%s", strings.Join(args, " "), code, out)
		}
	}
	for _, args := range [][]string{{"policy", "-h"}, {"help", "policy"}, {"apikey", "--help"}} {
		if code, out, _ := run(args...); code != 0 || !strings.Contains(out, "Commands:") {
			t.Errorf("dpctl %s: exit %d:\n%s", strings.Join(args, " "), code, out)
		}
	}
	// The flags a command takes are in its help, with their defaults.
	if _, out, _ := run("policy", "apply", "-h"); !strings.Contains(out, "--allow-drain") || !strings.Contains(out, "(default 30s)") {
		t.Errorf("policy apply -h lacks its flags:\n%s", out)
	}
	if code, _, errs := run("help", "frobnicate"); code != 2 || !strings.Contains(errs, `no command "frobnicate"`) {
		t.Errorf("help frobnicate: exit %d %q", code, errs)
	}
}

// TestCompletionBash sources the bash script and asks it what a user's
// Tab would get.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed for this test")
	}
	code, script, _ := run("completion", "bash")
	if code != 0 {
		t.Fatalf("completion bash: exit %d", code)
	}
	file := filepath.Join(t.TempDir(), "dpctl.bash")
	writeTo(t, file, script)
	tests := []struct {
		line string // the words typed; the last one is being completed
		want []string
		not  []string
	}{
		{"dpctl pol", []string{"policy"}, nil},
		{"dpctl ", []string{"status", "policy", "apikey", "audit", "version", "completion", "help"}, nil},
		{"dpctl policy ", []string{"get", "validate", "diff", "apply", "history", "rollback"}, []string{"status"}},
		{"dpctl policy apply --", []string{"--allow-drain", "--wait", "--revision", "--addr"}, []string{"--offline"}},
		{"dpctl policy validate --o", []string{"--offline"}, nil},
		{"dpctl --addr 127.0.0.1:1 sta", []string{"status"}, nil},
		{"dpctl config --type ", []string{"LDS", "RDS", "CDS", "EDS", "ECDS"}, nil},
		{"dpctl -o ", []string{"table", "json", "yaml"}, nil},
		{"dpctl completion ", []string{"bash", "zsh", "fish"}, nil},
		{"dpctl certs -", []string{"-dir", "-hosts", "-nodes"}, nil},
	}
	for _, tt := range tests {
		words := strings.Split(tt.line, " ")
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = "'" + w + "'"
		}
		sh := "source " + file + "; COMP_WORDS=(" + strings.Join(quoted, " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "; _dpctl; printf '%s\\n' \"${COMPREPLY[@]}\""
		out, err := exec.Command(bash, "-c", sh).CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tt.line, err, out)
		}
		checkCompletions(t, tt.line, strings.Fields(string(out)), tt.want, tt.not)
	}
	if code, out, _ := run("completion", "zsh"); code != 0 || !strings.Contains(out, "bashcompinit") {
		t.Errorf("completion zsh: exit %d", code)
	}
	if code, _, _ := run("completion", "tcsh"); code != 2 {
		t.Errorf("completion tcsh: exit %d, want 2", code)
	}
}

// TestCompletionFish loads the fish script into fish and asks it, with
// `complete -C`, what a user's Tab would get.
func TestCompletionFish(t *testing.T) {
	fish, err := exec.LookPath("fish")
	if err != nil {
		t.Fatal("fish is needed for this test (Debian: apt-get install fish)")
	}
	code, script, _ := run("completion", "fish")
	if code != 0 {
		t.Fatalf("completion fish: exit %d", code)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "dpctl.fish")
	writeTo(t, file, script)
	os.Mkdir(filepath.Join(dir, "certs"), 0o755)
	writeTo(t, filepath.Join(dir, "policy.yaml"), "")
	tests := []struct {
		line string
		want []string
		not  []string
	}{
		{"dpctl pol", []string{"policy"}, []string{"status"}},
		{"dpctl ", []string{"status", "policy", "apikey", "audit", "version", "completion", "help"}, []string{"get"}},
		{"dpctl policy ", []string{"get", "validate", "diff", "apply", "history", "rollback"}, []string{"status"}},
		{"dpctl policy apply --", []string{"--allow-drain", "--wait", "--revision", "--addr"}, []string{"--offline"}},
		{"dpctl policy validate --o", []string{"--offline"}, nil},
		{"dpctl --addr 127.0.0.1:1 sta", []string{"status"}, nil},
		{"dpctl --timeout 3s policy ", []string{"apply"}, []string{"status"}},
		{"dpctl config --type ", []string{"LDS", "RDS", "CDS", "EDS", "ECDS"}, nil},
		{"dpctl -o ", []string{"table", "json", "yaml"}, nil},
		{"dpctl completion ", []string{"bash", "zsh", "fish"}, nil},
		{"dpctl certs -", []string{"-dir", "-hosts", "-nodes"}, []string{"--addr"}},
		{"dpctl certs -dir ", []string{"certs/"}, []string{"policy.yaml"}},
		{"dpctl policy apply -f ", []string{"policy.yaml"}, nil},
	}
	for _, tt := range tests {
		// fish -N reads no user configuration; HOME keeps it from writing
		// any.
		cmd := exec.Command(fish, "-N", "-c", "source "+file+"; complete -C "+fishQuote(tt.line))
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_DATA_HOME="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%q: %v\n%s", tt.line, err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			word, _, _ := strings.Cut(l, "\t")
			got = append(got, word)
		}
		checkCompletions(t, tt.line, got, tt.want, tt.not)
	}
}

// checkCompletions: what line completed to (got) holds every word of want
// and none of not.
func checkCompletions(t *testing.T, line string, got, want, not []string) {
	t.Helper()
	for _, w := range want {
		if !contains(got, w) {
			t.Errorf("%q completes to %v, without %s", line, got, w)
		}
	}
	for _, w := range not {
		if contains(got, w) {
			t.Errorf("%q completes to %v, with %s", line, got, w)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func writeTo(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cliFake adds version, config, key sources, API keys and a refused
// policy edit to the fake.
type cliFake struct{ *fake }

func (f cliFake) GetVersion(ctx context.Context, _ *adminv1.GetVersionRequest) (*adminv1.GetVersionResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	return &adminv1.GetVersionResponse{Version: "v9.9.9", Commit: "abcdef123456", GoVersion: "go1.26.0", Replica: "cp-2"}, nil
}

func (f cliFake) GetConfig(ctx context.Context, req *adminv1.GetConfigRequest) (*adminv1.GetConfigResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	return &adminv1.GetConfigResponse{NodeId: req.GetNodeId(), ResourcesJson: map[string]string{
		"Listener": `[{"name":"public"}]`, "RouteConfiguration": `[{"name":"public-routes"}]`,
		"Cluster": `[{"name":"voice"}]`, "ClusterLoadAssignment": `[{"cluster_name":"voice"}]`,
		"TypedExtensionConfig": `[{"name":"handshake"}]`,
	}}, nil
}

func (f cliFake) ListKeySources(ctx context.Context, _ *adminv1.ListKeySourcesRequest) (*adminv1.ListKeySourcesResponse, error) {
	return &adminv1.ListKeySourcesResponse{}, f.auth(ctx)
}

func (f cliFake) GetPolicy(ctx context.Context, _ *adminv1.GetPolicyRequest) (*adminv1.GetPolicyResponse, error) {
	if err := f.auth(ctx); err != nil {
		return nil, err
	}
	return &adminv1.GetPolicyResponse{Revision: f.revision, Policy: &policyv1.Policy{
		Listeners: []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}},
		AuthPolicies: []*policyv1.AuthPolicy{{Name: "keys", ApiKeys: []*policyv1.APIKey{
			{Sha256: strings.Repeat("ab", 32), Identity: "agent-7"},
			{Sha256: strings.Repeat("cd", 32), Identity: "agent-8"},
		}}},
	}}, nil
}

func (f cliFake) ListNodes(ctx context.Context, req *adminv1.ListNodesRequest) (*adminv1.ListNodesResponse, error) {
	resp, err := f.fake.ListNodes(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.PolicyRejected = &adminv1.PolicyRejection{Source: "/etc/dp/policy.yaml", Error: `routes[0].idle_timeout: want a duration (line 12)`, At: timestamppb.Now()}
	return resp, nil
}

func TestVersion(t *testing.T) {
	conn := serveFake(t, cliFake{&fake{revision: "rev1"}})
	code, out, errs := run(append(conn, "version")...)
	if code != 0 || !strings.Contains(out, "Client: ") || !strings.Contains(out, "Server: v9.9.9 commit abcdef123456 go1.26.0 replica cp-2") {
		t.Fatalf("version: exit %d %s\n%s", code, errs, out)
	}
	code, out, _ = run("--addr", "127.0.0.1:1", "version", "--client")
	if code != 0 || !strings.Contains(out, "Client: ") || strings.Contains(out, "Server") {
		t.Fatalf("version --client: exit %d\n%s", code, out)
	}
	code, out, _ = run(append(conn, "-o", "json", "version")...)
	if code != 0 || !strings.Contains(out, `"client"`) || !strings.Contains(out, `"version": "v9.9.9"`) {
		t.Fatalf("version -o json: exit %d\n%s", code, out)
	}
}

func TestConfigShortTypeNames(t *testing.T) {
	conn := serveFake(t, cliFake{&fake{revision: "rev1"}})
	for typ, want := range map[string]string{
		"LDS": `"Listener"`, "rds": `"RouteConfiguration"`, "CDS": `"Cluster"`, "EDS": `"ClusterLoadAssignment"`,
		"ECDS": `"TypedExtensionConfig"`, "Cluster": `"Cluster"`, "routeconfiguration": `"RouteConfiguration"`,
	} {
		code, out, errs := run(append(conn, "config", "--node", "envoy-1", "--type", typ)...)
		if code != 0 || !strings.Contains(out, want) || strings.Count(out, `": [`) != 1 {
			t.Errorf("--type %s: exit %d %s\n%s", typ, code, errs, out)
		}
	}
	if code, _, errs := run(append(conn, "config", "--node", "envoy-1", "--type", "XDS")...); code != 2 || !strings.Contains(errs, "want LDS, RDS, CDS, EDS or ECDS") {
		t.Errorf("--type XDS: exit %d %q", code, errs)
	}
}

func TestKeysListsAPIKeys(t *testing.T) {
	conn := serveFake(t, cliFake{&fake{revision: "rev1"}})
	code, out, errs := run(append(conn, "keys")...)
	if code != 0 {
		t.Fatalf("keys: exit %d %s", code, errs)
	}
	for _, want := range []string{"AUTH POLICY", "IDENTITY", "agent-7", "abababababab…", "agent-8", "cdcdcdcdcdcd…"} {
		if !strings.Contains(out, want) {
			t.Errorf("keys lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, strings.Repeat("ab", 7)) {
		t.Errorf("keys shows more of a hash than its prefix:\n%s", out)
	}
	if code, out, _ := run(append(conn, "-o", "json", "keys")...); code != 0 || !strings.Contains(out, `"sha256_prefix": "abababababab"`) {
		t.Errorf("keys -o json: exit %d\n%s", code, out)
	}
}

func TestStatusShowsARefusedPolicy(t *testing.T) {
	conn := serveFake(t, cliFake{&fake{revision: "rev1"}})
	code, out, _ := run(append(conn, "status")...)
	if code != 0 || !strings.Contains(out, "policy from /etc/dp/policy.yaml REFUSED at ") ||
		!strings.Contains(out, "the last good policy keeps serving: routes[0].idle_timeout: want a duration (line 12)") {
		t.Errorf("status: exit %d\n%s", code, out)
	}
}

// TestAPIKeyNew: the key printed hashes to the hash in the policy line,
// and the line is valid in a policy.
func TestAPIKeyNew(t *testing.T) {
	code, out, errs := run("--addr", "127.0.0.1:1", "apikey", "new", "--identity", "agent 7", "--auth", "demo")
	if code != 0 {
		t.Fatalf("apikey new: exit %d %s", code, errs)
	}
	key := regexp.MustCompile(`(?m)^key: +(\S+)$`).FindStringSubmatch(out)
	line := regexp.MustCompile(`(?m)^  (- \{ sha256: .*\})$`).FindStringSubmatch(out)
	if key == nil || line == nil {
		t.Fatalf("no key or policy line:\n%s", out)
	}
	if len(key[1]) < 43 {
		t.Errorf("key %q is shorter than 256 bits", key[1])
	}
	sum := sha256.Sum256([]byte(key[1]))
	if !strings.Contains(line[1], hex.EncodeToString(sum[:])) {
		t.Errorf("the line %q does not hold the key's SHA-256", line[1])
	}
	doc := "listeners: [{ name: public, address: '127.0.0.1:10000' }]\n" +
		"backends: [{ name: voice, endpoints: ['127.0.0.1:8081'] }]\n" +
		"routes: [{ name: voice, match: { path: /v }, kind: websocket, backend: voice, auth: demo }]\n" +
		"auth_policies:\n  - name: demo\n    sources: [{ header: x-api-key }]\n    api_keys:\n      " + line[1] + "\n"
	p, err := policy.Parse([]byte(doc))
	if err != nil {
		t.Fatalf("the printed line does not make a valid policy: %v\n%s", err, doc)
	}
	if got := p.GetAuthPolicies()[0].GetApiKeys()[0].GetIdentity(); got != "agent 7" {
		t.Errorf("identity %q", got)
	}
	if code, _, _ := run("apikey", "new"); code != 2 {
		t.Errorf("apikey new without --identity: exit %d, want 2", code)
	}
}

// TestValidateOffline: the full validator with no control plane, errors
// with field path and line, for CI.
func TestValidateOffline(t *testing.T) {
	_, self, _, _ := runtime.Caller(0)
	example := filepath.Join(filepath.Dir(self), "..", "..", "examples", "policy.yaml")
	offline := func(file string) (int, string, string) {
		return run("--addr", "127.0.0.1:1", "--token", "x", "policy", "validate", "--offline", "-f", file)
	}
	if code, out, errs := offline(example); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("example policy: exit %d %s%s", code, out, errs)
	}
	base := "listeners: [{ name: public, address: '127.0.0.1:10000' }]\n" +
		"backends:\n  - name: voice\n    endpoints: ['127.0.0.1:8081']\n" +
		"routes:\n  - name: voice\n    match: { path: /v }\n    kind: websocket\n    backend: voice\n    idle_timeout: 60s\n"
	tests := []struct {
		name, old, new string
		want           []string
	}{
		{"duration without a unit", "idle_timeout: 60s", `idle_timeout: "60"`, []string{`routes[0].idle_timeout: want a duration in seconds with the unit s`, `(line 10)`}},
		{"dangling backend", "backend: voice", "backend: nope", []string{`routes[0].backend: no backend named "nope" (line 9)`}},
		{"metadata endpoint", "127.0.0.1:8081", "169.254.169.254:80", []string{"backends[0].endpoints[0]: 169.254.169.254 is link-local", "(line 4)"}},
		{"unknown field", "kind: websocket", "kind: websocket\n    colour: blue", []string{"routes[0].colour: unknown field (line 9)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, strings.Replace(base, tt.old, tt.new, 1))
			code, out, errs := offline(file)
			if code != 1 {
				t.Fatalf("exit %d, want 1: %s%s", code, out, errs)
			}
			for _, w := range tt.want {
				if !strings.Contains(out+errs, w) {
					t.Errorf("output lacks %q:\n%s%s", w, out, errs)
				}
			}
		})
	}
}

// TestApplySendsTheFileAsWritten: the file's text goes with the apply,
// so that the control plane can keep it.
func TestApplySendsTheFileAsWritten(t *testing.T) {
	f, conn := startFake(t)
	text := "# the public listener\nlisteners: [{name: public, address: '127.0.0.1:10000'}]  # keep me\n"
	if code, out, errs := run(append(conn, "policy", "apply", "-f", writeFile(t, text))...); code != 0 {
		t.Fatalf("apply: exit %d %s%s", code, out, errs)
	}
	if got := f.applied.GetPolicyYaml(); got != text {
		t.Errorf("policy_yaml = %q, want the file's text %q", got, text)
	}
}

// TestPolicyDiffShowsFields: diff names the fields that change, not only
// the Envoy resources.
func TestPolicyDiffShowsFields(t *testing.T) {
	_, conn := startFake(t)
	file := writeFile(t, "listeners: [{name: public, address: '127.0.0.1:10001'}, {name: admin, address: '127.0.0.1:10002'}]\n")
	code, out, errs := run(append(conn, "policy", "diff", "-f", file)...)
	if code != 0 {
		t.Fatalf("diff: exit %d %s", code, errs)
	}
	for _, want := range []string{
		"policy fields:",
		`~ listeners[public].address: "127.0.0.1:10000" -> "127.0.0.1:10001"`,
		`+ listeners[admin]: {"address":"127.0.0.1:10002","name":"admin"}`,
		"~ RouteConfiguration public",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("diff lacks %q:\n%s", want, out)
		}
	}
}
