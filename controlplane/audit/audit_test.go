package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// bodyModule is a hand-assembled Wasm module that exports the two HTTP
// body callbacks (and nothing else): what the audit looks for.
var bodyModule = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
	0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
	0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
	0x07, 0x32, 0x02, // export section: 50 bytes, two exports
	0x15, 'p', 'r', 'o', 'x', 'y', '_', 'o', 'n', '_', 'r', 'e', 'q', 'u', 'e', 's', 't', '_', 'b', 'o', 'd', 'y', 0x00, 0x00,
	0x16, 'p', 'r', 'o', 'x', 'y', '_', 'o', 'n', '_', 'r', 'e', 's', 'p', 'o', 'n', 's', 'e', '_', 'b', 'o', 'd', 'y', 0x00, 0x00,
	0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code
}

// readModule stands in for the file system: every module reads frames.
func readModule(path string) ([]byte, error) {
	if strings.HasSuffix(path, ".wasm") {
		return bodyModule, nil
	}
	return nil, errors.New("no such module")
}

// TestFixtures audits what real Envoys printed for each hand-written
// bootstrap (saved by envoy/e2e's TestAuditFindsEachClass -update-audit)
// and expects exactly the findings of its .want file, the same ones the
// live test expects.
func TestFixtures(t *testing.T) {
	wants, err := filepath.Glob("testdata/envoy/*.want")
	if err != nil || len(wants) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, want := range wants {
		base := strings.TrimSuffix(want, ".want")
		t.Run(filepath.Base(base), func(t *testing.T) {
			in := Input{ReadFile: readModule}
			for suffix, dst := range map[string]*[]byte{".config_dump.json": &in.ConfigDump, ".server_info.json": &in.ServerInfo, ".stats.json": &in.Stats} {
				b, err := os.ReadFile(base + suffix)
				if err != nil {
					t.Fatal(err)
				}
				*dst = b
			}
			rep, err := Run(in)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := lines(rep), wantLines(t, want); !slices.Equal(got, want) {
				t.Errorf("findings:\n%s\nwant:\n%s\nnotes: %v", strings.Join(got, "\n"), strings.Join(want, "\n"), rep.Notes)
			}
			if len(rep.Notes) > 0 {
				t.Errorf("notes: %v", rep.Notes)
			}
			for _, f := range rep.Findings {
				if f.Found == "" || f.Why == "" || f.Fix == "" {
					t.Errorf("finding %s at %s lacks found, why or fix", f.Check, f.Path)
				}
			}
		})
	}
}

func lines(rep *Report) []string {
	var out []string
	for _, f := range rep.Findings {
		out = append(out, fmt.Sprintf("%s %s %s", f.Severity, f.Check, f.Path))
	}
	slices.Sort(out)
	return out
}

func wantLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := strings.Fields(strings.ReplaceAll(string(b), " ", "\x00"))
	for i := range out {
		out[i] = strings.ReplaceAll(out[i], "\x00", " ")
	}
	slices.Sort(out)
	return out
}

// TestGatewayStreams checks the per-route summary of the gateway fixture:
// both routes carry WebSockets through the whole REST chain.
func TestGatewayStreams(t *testing.T) {
	in := Input{ReadFile: readModule}
	var err error
	if in.ConfigDump, err = os.ReadFile("testdata/envoy/gateway.config_dump.json"); err != nil {
		t.Fatal(err)
	}
	rep, err := Run(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Streams) != 2 {
		t.Fatalf("streams: %+v", rep.Streams)
	}
	s := rep.Streams[1]
	if s.Listener != "gateway" || s.Kind != "websocket" || s.Route != "vhost api, prefix /" || s.Cluster != "app" ||
		strings.Join(s.Chain, ",") != "cors,ext_authz,lua,compressor,router" || s.IdleTimeout != "5m (default)" {
		t.Errorf("stream: %+v", s)
	}
	if s.Findings["medium"] != 2 || s.Findings["low"] != 2 || s.Findings["info"] != 3 {
		t.Errorf("stream findings: %v", s.Findings)
	}
}

// dumpOf wraps one static listener, given as YAML in config-dump form,
// and optional clusters into a config dump.
func dumpOf(t *testing.T, listener string, clusters ...string) []byte {
	t.Helper()
	doc := "configs:\n- '@type': type.googleapis.com/envoy.admin.v3.ListenersConfigDump\n  static_listeners:\n  - listener:\n" + indent(listener, 6)
	doc += "- '@type': type.googleapis.com/envoy.admin.v3.ClustersConfigDump\n  static_clusters:\n"
	for _, c := range clusters {
		doc += "  - cluster:\n" + indent(c, 6)
	}
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString(pad + l + "\n")
	}
	return b.String()
}

// wsListener is a clean WebSocket listener whose upgrade chain is filters
// (YAML list items, indented for the spot) followed by the router.
func wsListener(filters, routeExtra string) string {
	return `'@type': type.googleapis.com/envoy.config.listener.v3.Listener
name: l
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      '@type': type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: l
      codec_type: HTTP1
      upgrade_configs:
      - upgrade_type: websocket
        filters:
` + filters + `
        - name: envoy.filters.http.router
          typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
      route_config:
        virtual_hosts:
        - name: v
          domains: ['*']
          routes:
          - match: {prefix: /}
            route: {cluster: c, timeout: 0s, idle_timeout: 600s}
` + routeExtra
}

const goodCluster = `'@type': type.googleapis.com/envoy.config.cluster.v3.Cluster
name: c
circuit_breakers: {thresholds: [{max_connections: 5000, max_requests: 5000}]}
`

func TestRun(t *testing.T) {
	tests := []struct {
		name       string
		in         func(t *testing.T) Input
		want       []string // "severity check", sorted
		wantErr    string
		wantStream int
	}{
		{
			name:       "clean",
			in:         func(t *testing.T) Input { return Input{ConfigDump: dumpOf(t, wsListener("", ""), goodCluster)} },
			wantStream: 1,
		},
		{
			name: "unknown filter type kept by name",
			in: func(t *testing.T) Input {
				f := "        - name: acme.inspector\n          typed_config: {'@type': type.googleapis.com/acme.filters.Inspector, depth: 3}"
				return Input{ConfigDump: dumpOf(t, wsListener(f, ""), goodCluster)}
			},
			want:       []string{"info unknown-filter"},
			wantStream: 1,
		},
		{
			name: "buffer disabled on the route",
			in: func(t *testing.T) Input {
				f := "        - name: buf\n          typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 1024}"
				l := strings.Replace(wsListener(f, ""), "idle_timeout: 600s}", "idle_timeout: 600s}\n            typed_per_filter_config:\n              buf: {'@type': type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}", 1)
				return Input{ConfigDump: dumpOf(t, l, goodCluster)}
			},
			wantStream: 1,
		},
		{
			name: "inline Wasm module without body callbacks",
			in: func(t *testing.T) Input {
				f := "        - name: w\n          typed_config:\n            '@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n            config: {vm_config: {runtime: envoy.wasm.runtime.v8, code: {local: {inline_bytes: AGFzbQEAAAA=}}}}"
				return Input{ConfigDump: dumpOf(t, wsListener(f, ""), goodCluster)}
			},
			wantStream: 1,
		},
		{
			name: "module file not readable",
			in: func(t *testing.T) Input {
				f := "        - name: w\n          typed_config:\n            '@type': type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm\n            config: {vm_config: {runtime: envoy.wasm.runtime.v8, code: {local: {filename: /nonexistent/x.so}}}}"
				return Input{ConfigDump: dumpOf(t, wsListener(f, ""), goodCluster), ReadFile: readModule}
			},
			want:       []string{"info wasm-not-read"},
			wantStream: 1,
		},
		{
			name: "stats show streams cut by the idle timeout and a filter chain draining; server draining",
			in: func(t *testing.T) Input {
				return Input{
					ConfigDump: dumpOf(t, wsListener("", ""), goodCluster),
					ServerInfo: []byte(`{"state": "DRAINING", "version": "x/1.40.0", "unknown_field": 1}`),
					Stats: []byte(`{"stats": [{"name": "http.l.downstream_rq_idle_timeout", "value": 7},
						{"name": "listener_manager.total_filter_chains_draining", "value": 1}, {"histograms": {}}]}`),
				}
			},
			want:       []string{"high listener-draining", "info server-draining", "medium streams-cut"},
			wantStream: 1,
		},
		{
			name: "upgrade disabled on the route: no stream",
			in: func(t *testing.T) Input {
				l := strings.Replace(wsListener("", ""), "timeout: 0s,", "timeout: 0s, upgrade_configs: [{upgrade_type: websocket, enabled: false}],", 1)
				return Input{ConfigDump: dumpOf(t, l, goodCluster)}
			},
		},
		{
			name: "upgrade enabled on the route alone runs the REST chain",
			in: func(t *testing.T) Input {
				l := strings.Replace(wsListener("        - name: envoy.filters.http.cors\n          typed_config: {'@type': type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}", ""),
					"      upgrade_configs:\n      - upgrade_type: websocket\n        filters:\n", "      http_filters:\n", 1)
				l = strings.Replace(l, "timeout: 0s,", "timeout: 0s, upgrade_configs: [{upgrade_type: websocket}],", 1)
				return Input{ConfigDump: dumpOf(t, l, goodCluster)}
			},
			want:       []string{"info upgrade-uses-rest-chain"},
			wantStream: 1,
		},
		{
			name:    "not JSON",
			in:      func(*testing.T) Input { return Input{ConfigDump: []byte("<html>")} },
			wantErr: "config dump",
		},
		{
			name:    "not a config dump",
			in:      func(*testing.T) Input { return Input{ConfigDump: []byte(`{"stats": []}`)} },
			wantErr: "no \"configs\"",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Run(tt.in(t))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range rep.Findings {
				got = append(got, f.Severity.String()+" "+f.Check)
			}
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("findings %q, want %q (notes %v)", got, tt.want, rep.Notes)
			}
			if len(rep.Streams) != tt.wantStream {
				t.Errorf("%d streams, want %d", len(rep.Streams), tt.wantStream)
			}
		})
	}
}

func TestSeverity(t *testing.T) {
	for _, s := range []Severity{Info, Low, Medium, High} {
		got, err := ParseSeverity(strings.ToUpper(s.String()))
		if err != nil || got != s {
			t.Errorf("ParseSeverity(%s) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseSeverity("critical"); err == nil {
		t.Error("ParseSeverity(critical) succeeded")
	}
}
