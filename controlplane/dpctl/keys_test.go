package dpctl

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/directpipe/directpipe/controlplane/app"
)

// TestKeysShowsAFailedRefresh: a key file that breaks after a good read
// keeps its keys serving; the failure shows in dpctl keys (last success,
// last error, keys skipped), in the admin API's JSON and in /metrics.
func TestKeysShowsAFailedRefresh(t *testing.T) {
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	good := `{"keys":[{"kty":"oct","kid":"one","alg":"HS256","k":"ZGlyZWN0cGlwZS1kZXZlbG9wbWVudC1zZWNyZXQtMzJi"},` +
		`{"kty":"oct","kid":"short","alg":"HS256","k":"c2hvcnQ"}]}`
	if err := os.WriteFile(jwksFile, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	policyFile := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(`
listeners: [{ name: public, address: "127.0.0.1:10000" }]
routes: [{ name: voice, match: { path: /v1/voice }, kind: websocket, backend: voice, auth: files }]
backends: [{ name: voice, endpoints: ["127.0.0.1:8081"] }]
auth_policies:
  - name: files
    sources: [{ bearer: true }]
    jwt: { jwks_file: "`+jwksFile+`", audiences: [voice] }
`), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := app.New(ctx, app.Config{
		PolicyFile: policyFile, XDSAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", MetricsAddr: "127.0.0.1:0",
		AdminToken: token, WasmPath: "/x.wasm", Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)
	if err := os.WriteFile(jwksFile, []byte(`{"keys":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	a.Refresh(ctx)
	dpctl := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Run(ctx, append([]string{"--addr", a.AdminAddr(), "--token", token}, args...), &out, &errb); code != 0 {
			t.Fatalf("dpctl %s: exit %d: %s", strings.Join(args, " "), code, errb.String())
		}
		return out.String()
	}
	out := dpctl("keys")
	for _, want := range []string{
		"POLICY", "LAST ERROR", "files", "file", jwksFile,
		"files " + jwksFile + ": last error: jwks file " + jwksFile + ": not a JWKS document",
		"files " + jwksFile + `: skipped keys[1] (kid "short"): key is 5 bytes; HS256 needs at least 32`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dpctl keys does not show %q:\n%s", want, out)
		}
	}
	if row := strings.Split(out, "\n")[1]; strings.Contains(row, "never") || !strings.Contains(row, " 1 ") {
		t.Errorf("the row must show one key served and a last success: %q", row)
	}
	if js := dpctl("-o", "json", "keys"); !strings.Contains(js, `"last_error"`) || !strings.Contains(js, `"last_success"`) {
		t.Errorf("dpctl -o json keys:\n%s", js)
	}
	resp, err := http.Get("http://" + a.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := `directpipe_jwks_refresh_failures_total{source="` + jwksFile + `"} 1`; !bytes.Contains(body, []byte(want)) {
		t.Errorf("/metrics has no %s", want)
	}
}
