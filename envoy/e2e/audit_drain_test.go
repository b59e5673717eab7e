package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"text/template"
	"time"

	"github.com/directpipe/directpipe/controlplane/audit"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// drainBootstrap takes its listener from a file by LDS, as a listener
// from a control plane would come.
const drainBootstrap = `
node: { id: audit-drain, cluster: audit }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{.AdminPort}} } }
dynamic_resources:
  lds_config:
    resource_api_version: V3
    path_config_source: { path: "{{.Dir}}/lds.yaml" }
static_resources:
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    circuit_breakers: { thresholds: [{ max_connections: 100, max_requests: 100 }] }
    load_assignment:
      cluster_name: backend
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{.BackendPort}} } } } }] }]
`

// drainListener carries metadata that a control plane might bump on every
// push, and its routes inline.
const drainListener = `
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: public
  address: { socket_address: { address: 127.0.0.1, port_value: {{.Port}} } }
  metadata: { filter_metadata: { gateway.example.com: { generation: "{{.Generation}}" } } }
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: public
        codec_type: HTTP1
        upgrade_configs:
        - upgrade_type: websocket
          filters:
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
        http_filters:
        - name: envoy.filters.http.router
          typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
        route_config:
          name: inline
          virtual_hosts:
          - name: voice
            domains: ["*"]
            routes:
{{- if .ExtraRoute}}
            - match: { prefix: /v2/ }
              route: { cluster: backend, timeout: 0s }
{{- end}}
            - match: { prefix: / }
              route: { cluster: backend, timeout: 0s, idle_timeout: 600s }
`

var (
	drainBootstrapTemplate = template.Must(template.New("bootstrap").Parse(drainBootstrap))
	drainListenerTemplate  = template.Must(template.New("listener").Parse(drainListener))
)

// TestAuditListenerUpdateCutsStreams shows the harm behind the audit's
// listener checks on Envoy 1.40: a listener that comes by LDS is
// replaced by any change to it (here its metadata alone, then one inline
// route), and each replacement cuts the live WebSocket on it when the
// drain time ends. The audit of the same Envoy reports the checks above
// info: listener-draining while the old listener drains,
// listeners-modified, listener-metadata and routes-in-listener.
func TestAuditListenerUpdateCutsStreams(t *testing.T) {
	be := startRawBackend(t)
	vals := map[string]any{
		"AdminPort": testkit.FreePort(t), "Port": testkit.FreePort(t), "BackendPort": be.port,
		"Dir": t.TempDir(), "Generation": 1, "ExtraRoute": false,
	}
	lds := filepath.Join(vals["Dir"].(string), "lds.yaml")
	writeAtomic(t, lds, execTemplate(t, drainListenerTemplate, vals))
	// A drain time of a few seconds keeps the old listener in
	// draining_state while the audit reads it.
	e := testkit.StartEnvoyWithConfig(t, execTemplate(t, drainBootstrapTemplate, vals), vals["AdminPort"].(int), 1, 3*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	addr := fmt.Sprintf("127.0.0.1:%d", vals["Port"])

	steps := []struct {
		change string
		edit   func()
		// checks must be reported above info once the change is applied.
		checks []string
	}{
		{"the listener's metadata", func() { vals["Generation"] = 2 },
			[]string{"listeners-modified", "listener-metadata", "routes-in-listener"}},
		{"one inline route", func() { vals["ExtraRoute"] = true },
			[]string{"listeners-modified", "routes-in-listener"}},
	}
	for i, step := range steps {
		s := openStream(t, addr, false)
		if err := s.echo([]byte("before")); err != nil {
			t.Fatalf("step %d: first frame: %v", i+1, err)
		}
		step.edit()
		writeAtomic(t, lds, execTemplate(t, drainListenerTemplate, vals))
		if err := e.WaitStat(ctx, "listener_manager.listener_modified", func(v int64) bool { return v >= int64(i+1) }); err != nil {
			t.Fatalf("step %d: Envoy did not apply the change to %s: %v", i+1, step.change, err)
		}
		// A change to the metadata replaces the listener; one to a route
		// only its filter chain, drained in place.
		drainingNow := func() int64 {
			st, err := e.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return st["listener_manager.total_listeners_draining"] + st["listener_manager.total_filter_chains_draining"]
		}
		draining := drainingNow()
		rep := auditOf(ctx, t, e)
		stillDraining := drainingNow()
		checks := step.checks
		if draining > 0 && stillDraining > 0 {
			// The old listener drained before, during and after the
			// audit read the dump.
			checks = append(checks, "listener-draining")
		} else {
			t.Logf("step %d: the old listener or chain was gone before the audit read the dump; listener-draining not checked", i+1)
		}
		for _, c := range checks {
			if !reported(rep, c) {
				t.Errorf("step %d: after a change to %s the audit does not report %s above info", i+1, step.change, c)
			}
		}
		harmed, how := watch(s, probeActive, 20*time.Second)
		s.Close()
		t.Logf("a change to %s: %s", step.change, how)
		if !harmed {
			t.Errorf("step %d: a change to %s left the live stream alone: %s", i+1, step.change, how)
		}
	}
	// Once the old listeners are gone, the stream through the new one
	// lives on.
	if err := e.WaitStat(ctx, "listener_manager.total_listeners_draining", func(v int64) bool { return v == 0 }); err != nil {
		t.Fatal(err)
	}
	s := openStream(t, addr, false)
	defer s.Close()
	if harmed, how := watch(s, probeActive, 2*time.Second); harmed {
		t.Errorf("with no change, the stream was cut: %s", how)
	}
}

// TestAuditServerDrainingKeepsStreams puts server-draining to the test:
// Envoy reports DRAINING once its health check is failed
// (/healthcheck/fail, how an operator starts taking an Envoy out); a
// live WebSocket through it is not cut by that, even well past the drain
// time, so the audit reports it at info.
func TestAuditServerDrainingKeepsStreams(t *testing.T) {
	be := startRawBackend(t)
	c := harmCase{check: "server-draining"}
	vals := harmValues(t, c, be.port, testkit.FreePort(t))
	var cfg bytes.Buffer
	if err := harmTemplate.Execute(&cfg, vals); err != nil {
		t.Fatal(err)
	}
	e := testkit.StartEnvoyWithConfig(t, cfg.Bytes(), vals["AdminPort"].(int), 1, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := openStream(t, fmt.Sprintf("127.0.0.1:%d", vals["Port"]), false)
	defer s.Close()
	if err := s.echo([]byte("before")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(e.AdminURL()+"/healthcheck/fail", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	auditAgrees(ctx, t, e, c)
	harmed, how := watch(s, probeActive, 4*time.Second)
	report(t, c, harmed, "after /healthcheck/fail with a drain time of 1s, "+how)
}

// reported says whether the report has a finding of check above info.
func reported(rep *audit.Report, check string) bool {
	for _, f := range rep.Findings {
		if f.Check == check && f.Severity > audit.Info {
			return true
		}
	}
	return false
}

func execTemplate(t *testing.T, tmpl *template.Template, vals map[string]any) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := tmpl.Execute(&b, vals); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
