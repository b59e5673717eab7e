package dpctl

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

const fixtures = "../audit/testdata/envoy/"

func TestAuditFile(t *testing.T) {
	dump := fixtures + "gateway.config_dump.json"
	code, out, errs := run("audit", "-f", dump, "--server-info", fixtures+"gateway.server_info.json", "--stats", fixtures+"gateway.stats.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	// One summary line per stream route, then the findings.
	for _, want := range []string{
		"gateway   websocket  vhost api, prefix /api/  rest",
		"cors,ext_authz,lua,compressor,router  5m (default)  2 medium, 2 low, 3 info",
		"INFO    compression-on-upgrade\n        at:    static_listeners[gateway].listener.filter_chains[0].filters[0].typed_config.http_filters[3]",
		"9 findings: 3 medium, 2 low, 4 info",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	code, out, errs = run("audit", "-f", dump, "--fail-on", "medium", "-o", "json")
	if code != 3 || !strings.Contains(errs, "3 findings at or above medium") {
		t.Errorf("--fail-on medium: exit %d, stderr %q", code, errs)
	}
	var rep struct {
		Streams  []map[string]any `json:"streams"`
		Findings []map[string]any `json:"findings"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Streams) != 2 || len(rep.Findings) != 9 || rep.Findings[0]["severity"] != "medium" {
		t.Errorf("json: %v %+v", err, rep)
	}
	if code, _, _ := run("audit", "-f", dump, "--fail-on", "high"); code != 0 {
		t.Errorf("--fail-on high with no high finding: exit %d", code)
	}
	if code, out, _ := run("audit", "-f", dump, "-o", "yaml"); code != 0 || !strings.Contains(out, "- check: circuit-breaker-default") {
		t.Errorf("yaml: exit %d\n%s", code, out)
	}
}

func TestAuditLive(t *testing.T) {
	files := map[string]string{"/config_dump": "lds-drain.config_dump.json", "/server_info": "lds-drain.server_info.json", "/stats": "lds-drain.stats.json"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(fixtures + files[r.URL.Path])
		if err != nil {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()
	code, out, errs := run("audit", "--envoy-admin", srv.URL, "--fail-on", "high")
	if code != 3 || !strings.Contains(out, "HIGH    listener-draining") || !strings.Contains(out, "drain time 1m, strategy Immediate") {
		t.Errorf("exit %d, stderr %q\n%s", code, errs, out)
	}
}

func TestAuditUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"audit"}, 2, "needs --envoy-admin URL or -f FILE"},
		{[]string{"audit", "-f", "x", "--envoy-admin", "http://127.0.0.1:1"}, 2, "needs --envoy-admin URL or -f FILE"},
		{[]string{"audit", "--envoy-admin", "http://127.0.0.1:1", "--stats", "s.json"}, 2, "go with -f"},
		{[]string{"audit", "-f", "x", "--fail-on", "critical"}, 2, "unknown severity"},
		{[]string{"audit", "-f", "/nonexistent/dump.json"}, 1, "no such file"},
		{[]string{"audit", "-f", "audit_test.go"}, 1, "config dump"},
		{[]string{"audit", "--envoy-admin", "http://127.0.0.1:1", "--timeout", "2s"}, 1, "connection refused"},
	}
	for _, tt := range tests {
		code, _, errs := run(tt.args...)
		if code != tt.code || !strings.Contains(errs, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tt.args, code, errs, tt.code, tt.want)
		}
	}
}
