package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/template"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	extprocv3svc "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"golang.org/x/net/http2"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"

	"github.com/directpipe/directpipe/controlplane/audit"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// harmCase is one audit check put to the test: a static Envoy with the
// setting the check flags, a stream through it, and what became of the
// stream.
type harmCase struct {
	check string
	// tag tells apart cases of one check in the test's name.
	tag string
	// Snippets of the bootstrap, indented by the template.
	hcm, route, upgradeFilters, tcp, cluster string
	// routeTimeout replaces the route's timeout: 0s.
	routeTimeout string
	// h2 opens the WebSocket by extended CONNECT over HTTP/2.
	h2 bool
	// viaTCP sends the stream through the tcp_proxy listener.
	viaTCP bool
	// noConnect leaves allow_connect out, noUpgrade the upgrade_configs.
	noConnect, noUpgrade bool
	// match replaces the route's match: { prefix: / }.
	match string
	// restFilters go before the router in the connection manager's
	// http_filters; sharedChain gives the upgrade no filters of its own,
	// so that it runs http_filters.
	restFilters string
	sharedChain bool
	// overload is the overload manager's actions (and buffer accounting),
	// triggered by an injected resource whose pressure the probe raises
	// to 1 once the stream is up.
	overload string
	// resetFirst makes the back end reset the first handshake it gets.
	resetFirst bool
	// hangUp makes the back end reset every stream right after the
	// upgrade; a second, ordinary back end then shares the cluster.
	hangUp bool
	// flood makes the back end send without pause once upgraded, stall
	// makes it stop reading.
	flood, stall bool
	// queued is how much of a stream probeQueued's sender must get out
	// before back-pressure stops it for the harm to show.
	queued int
	// listener is a snippet of the WebSocket listener itself.
	listener string
	// streams is how many streams probeOverflow holds open.
	streams int
	// frameWasm puts bench/framefilter, a Wasm filter that reads every
	// body chunk, first on the upgrade path.
	frameWasm bool
	// unflagged: the audit must not report the check for this bootstrap,
	// whose stream Envoy 1.40 carries fine.
	unflagged bool
	// sidecar runs an ext_authz/ext_proc server behind cluster nowhere;
	// overrideBody makes its processor ask for the request body in
	// streamed mode at the handshake.
	sidecar, overrideBody bool
	probe                 harmProbe
	// before is a stat that must be positive before the probe watches
	// (the setting's timer has fired).
	before string
	// window bounds how long the probe watches the stream.
	window time.Duration
	// wantHarm says whether Envoy 1.40 hurts the stream; evidence is a
	// stat that must then be positive.
	wantHarm bool
	evidence string
}

type harmProbe int

const (
	// probeIdle exchanges one frame, then stays silent until the stream
	// ends or the window is over.
	probeIdle harmProbe = iota
	// probeActive exchanges a frame every 100 ms until the stream ends or
	// the window is over.
	probeActive
	// probeHeld sends the handshake and 16 KiB of frames at once: harm is
	// a handshake the back end never got (held or refused by a filter
	// that waits for a body).
	probeHeld
	// probeHealth opens the stream, then makes the back end fail its
	// health check.
	probeHealth
	// probeReplay opens a stream through a back end that resets the first
	// handshake: harm is a handshake the back end got twice.
	probeReplay
	// probeRefused opens a stream: harm is an upgrade Envoy refuses.
	probeRefused
	// probeProcessed exchanges frames: harm is frames sent to the
	// external processor, a round trip each.
	probeProcessed
	// probeOverflow holds harmCase.streams streams open and opens one
	// more: harm is that one refused.
	probeOverflow
	// probeEjected opens streams one after another through a back end
	// that resets each after the upgrade and one that keeps them: harm
	// is the first back end ejected.
	probeEjected
	// probeStalled stops reading while the back end floods the stream,
	// then raises the overload pressure: harm is the stream reset.
	probeStalled
	// probeQueued sends without pause to a back end that reads nothing:
	// harm is harmCase.queued bytes or more sent before the sender
	// blocks.
	probeQueued
	// probeBursts echoes 20 frames of 16 KiB: harm is Envoy pausing its
	// reads of the stream at every frame.
	probeBursts
)

const harmBootstrap = `
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: {{.AdminPort}} } }
{{- if .Overload}}
overload_manager:
  refresh_interval: 0.1s
  resource_monitors:
  - name: envoy.resource_monitors.injected_resource
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.injected_resource.v3.InjectedResourceConfig
      filename: {{.PressureFile}}
{{indent 2 .Overload}}
{{- end}}
static_resources:
  listeners:
  - name: ws
    address: { socket_address: { address: 127.0.0.1, port_value: {{.Port}} } }
{{indent 4 .Listener}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ws
          codec_type: AUTO
{{- if .AllowConnect}}
          http2_protocol_options: { allow_connect: true }
{{- end}}
{{indent 10 .HCM}}
{{- if .Upgrade}}
          upgrade_configs:
          - upgrade_type: websocket
{{- if not .SharedChain}}
            filters:
{{indent 12 .Filters}}
            - name: envoy.filters.http.router
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
{{- end}}
{{- end}}
          http_filters:
{{indent 10 .RESTFilters}}
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          route_config:
            virtual_hosts:
            - name: ws
              domains: ["*"]
              routes:
              - match: {{.Match}}
                route:
                  cluster: backend
                  timeout: {{.Timeout}}
{{indent 18 .Route}}
  - name: tcp
    address: { socket_address: { address: 127.0.0.1, port_value: {{.TCPPort}} } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: backend
{{indent 10 .TCP}}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{.BackendPort}} } } }
{{- if .Backend2Port}}
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{.Backend2Port}} } } }
{{- end}}
{{indent 4 .Cluster}}
  - name: nowhere
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }
    load_assignment:
      cluster_name: nowhere
      endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: {{.NowherePort}} } } } }] }]
`

var harmTemplate = template.Must(template.New("harm").Funcs(template.FuncMap{
	"indent": func(n int, s string) string {
		pad := strings.Repeat(" ", n)
		var b strings.Builder
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			if l != "" {
				b.WriteString(pad + l + "\n")
			}
		}
		return strings.TrimSuffix(b.String(), "\n")
	},
}).Parse(harmBootstrap))

// healthChecked is a cluster that checks its host every second and
// closes its connections on the first failure.
const healthChecked = `close_connections_on_host_health_failure: true
health_checks:
- timeout: 1s
  interval: 1s
  no_traffic_interval: 1s
  no_traffic_healthy_interval: 1s
  unhealthy_threshold: 1
  healthy_threshold: 1
  http_health_check: { path: /health }`

// harmCases are the audit's checks whose harm a stream can show. Every
// timer is a second or two so that a case is short; a case watches for
// a few seconds only when it shows that a stream is kept.
var harmCases = []harmCase{
	{check: "stream-idle-timeout", hcm: "stream_idle_timeout: 1s", probe: probeIdle, window: 20 * time.Second,
		wantHarm: true, evidence: "http.ws.downstream_rq_idle_timeout"},
	{check: "max-stream-duration", tag: "route", route: "max_stream_duration: { max_stream_duration: 1s }", probe: probeActive, window: 20 * time.Second,
		wantHarm: true, evidence: "http.ws.downstream_rq_max_duration_reached"},
	{check: "max-stream-duration", tag: "upstream", cluster: `typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: { max_stream_duration: 1s }
    explicit_http_config: { http_protocol_options: {} }`, probe: probeActive, window: 20 * time.Second,
		wantHarm: true, evidence: "cluster.backend.upstream_rq_max_duration_reached"},
	{check: "max-connection-duration", hcm: "common_http_protocol_options: { max_connection_duration: 1s }\ndrain_timeout: 1s",
		probe: probeActive, before: "http.ws.downstream_cx_max_duration_reached", window: 4 * time.Second},
	{check: "max-connection-duration", hcm: "common_http_protocol_options: { max_connection_duration: 1s }\ndrain_timeout: 1s", h2: true,
		probe: probeActive, before: "http.ws.downstream_cx_max_duration_reached", window: 4 * time.Second},
	{check: "route-timeout", routeTimeout: "1s", probe: probeActive, window: 4 * time.Second},
	{check: "route-timeout", routeTimeout: "1s", probe: probeIdle, window: 4 * time.Second},
	{check: "tcp-idle-timeout", tcp: "idle_timeout: 1s", viaTCP: true, probe: probeIdle, window: 20 * time.Second,
		wantHarm: true, evidence: "tcp.tcp.idle_timeout"},
	{check: "tcp-max-duration", tcp: "max_downstream_connection_duration: 1s", viaTCP: true, probe: probeActive, window: 20 * time.Second,
		wantHarm: true, evidence: "tcp.tcp.max_downstream_connection_duration"},
	{check: "buffer-on-upgrade", upgradeFilters: `- name: envoy.filters.http.buffer
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
    max_request_bytes: 4096`, probe: probeHeld, window: 3 * time.Second, wantHarm: true},
	{check: "ext-authz-body", upgradeFilters: `- name: envoy.filters.http.ext_authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
    transport_api_version: V3
    grpc_service: { envoy_grpc: { cluster_name: nowhere } }
    with_request_body: { max_request_bytes: 4096 }`, sidecar: true, probe: probeHeld, window: 3 * time.Second},
	{check: "ext-proc-body", upgradeFilters: `- name: envoy.filters.http.ext_proc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
    grpc_service: { envoy_grpc: { cluster_name: nowhere } }
    processing_mode: { response_header_mode: SKIP, request_body_mode: STREAMED }`, sidecar: true, probe: probeProcessed, wantHarm: true},
	{check: "ext-proc-body", tag: "buffered", upgradeFilters: `- name: envoy.filters.http.ext_proc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
    grpc_service: { envoy_grpc: { cluster_name: nowhere } }
    processing_mode: { response_header_mode: SKIP, request_body_mode: BUFFERED }`, sidecar: true, probe: probeHeld, window: 3 * time.Second, wantHarm: true},
	{check: "lua-reads-body", upgradeFilters: `- name: envoy.filters.http.lua
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
    default_source_code:
      inline_string: |
        function envoy_on_request(handle)
          local body = handle:body()
        end`, probe: probeHeld, window: 3 * time.Second, wantHarm: true},
	{check: "compression-on-upgrade", upgradeFilters: `- name: envoy.filters.http.compressor
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
    compressor_library:
      name: gzip
      typed_config: { "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip }`,
		probe: probeActive, window: 3 * time.Second},
	{check: "health-failure-closes-streams", cluster: healthChecked, probe: probeHealth,
		before: "cluster.backend.health_check.failure", window: 4 * time.Second},
	{check: "health-failure-closes-streams", cluster: healthChecked, viaTCP: true, probe: probeHealth,
		before: "cluster.backend.health_check.failure", window: 20 * time.Second, wantHarm: true},
	{check: "retries-on-upgrade", route: "retry_policy: { retry_on: \"reset,connect-failure,5xx\", num_retries: 2 }",
		resetFirst: true, probe: probeReplay, wantHarm: true},
	{check: "no-extended-connect", noConnect: true, h2: true, probe: probeRefused, wantHarm: true},
	{check: "upgrade-not-enabled", noUpgrade: true, match: upgradeOnly, probe: probeRefused, wantHarm: true},
	{check: "upgrade-not-enabled", tag: "route-level", noUpgrade: true, route: "upgrade_configs: [{ upgrade_type: websocket }]",
		unflagged: true, probe: probeActive, window: 2 * time.Second},
	{check: "upgrade-uses-rest-chain", sharedChain: true, restFilters: `- name: envoy.filters.http.cors
  typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors }`,
		probe: probeActive, window: 2 * time.Second},
	{check: "ext-proc-mode-override", upgradeFilters: `- name: envoy.filters.http.ext_proc
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
    grpc_service: { envoy_grpc: { cluster_name: nowhere } }
    allow_mode_override: true
    processing_mode: { response_header_mode: SKIP }`, sidecar: true, overrideBody: true, probe: probeProcessed, wantHarm: true},
	{check: "wasm-reads-frames", frameWasm: true, probe: probeActive, window: 2 * time.Second},
	{check: "buffer-limit", cluster: "per_connection_buffer_limit_bytes: 67108864", stall: true, probe: probeQueued, queued: 64 << 20,
		wantHarm: true, evidence: "http.ws.downstream_flow_control_paused_reading_total"},
	{check: "buffer-limit", tag: "default", stall: true, probe: probeQueued, queued: 64 << 20, unflagged: true},
	{check: "buffer-limit", tag: "small", listener: "per_connection_buffer_limit_bytes: 1024", cluster: "per_connection_buffer_limit_bytes: 1024",
		probe: probeBursts, wantHarm: true},
	{check: "buffer-limit", tag: "small-default", probe: probeBursts, unflagged: true},
	{check: "circuit-breaker-default", probe: probeOverflow, streams: 1024, window: 3 * time.Second,
		wantHarm: true, evidence: "cluster.backend.upstream_cx_overflow"},
	{check: "circuit-breaker-default", viaTCP: true, probe: probeOverflow, streams: 1024, window: 3 * time.Second,
		wantHarm: true, evidence: "cluster.backend.upstream_cx_overflow"},
	{check: "outlier-detection", cluster: "outlier_detection: { consecutive_5xx: 5, interval: 1s, base_ejection_time: 30s }",
		hangUp: true, probe: probeEjected},
	{check: "overload-shortens-idle", overload: `actions:
- name: envoy.overload_actions.reduce_timeouts
  triggers:
  - name: envoy.resource_monitors.injected_resource
    scaled: { scaling_threshold: 0.5, saturation_threshold: 0.9 }
  typed_config:
    "@type": type.googleapis.com/envoy.config.overload.v3.ScaleTimersOverloadActionConfig
    timer_scale_factors: [{ timer: HTTP_DOWNSTREAM_STREAM_IDLE, min_timeout: 1s }]`,
		probe: probeIdle, before: "overload.envoy.overload_actions.reduce_timeouts.scale_percent", window: 20 * time.Second,
		wantHarm: true, evidence: "http.ws.downstream_rq_idle_timeout"},
	{check: "overload-resets-streams", h2: true, flood: true, overload: `buffer_factory_config: { minimum_account_to_track_power_of_two: 10 }
actions:
- name: envoy.overload_actions.reset_high_memory_stream
  triggers:
  - name: envoy.resource_monitors.injected_resource
    scaled: { scaling_threshold: 0.5, saturation_threshold: 0.9 }`,
		probe: probeStalled, window: 10 * time.Second, wantHarm: true, evidence: "envoy.overload_actions.reset_high_memory_stream.count"},
}

// upgradeOnly matches WebSocket handshakes only.
const upgradeOnly = "{ prefix: /, headers: [{ name: upgrade, string_match: { exact: websocket, ignore_case: true } }] }"

// TestAuditHarmShown puts each audit check it can to a real Envoy 1.40:
// the setting the check flags, a live stream through it, and whether the
// stream was cut, held, refused or replayed as the finding says. The
// audit of the same Envoy must agree: a check whose harm does not show
// here is reported at info, saying "not shown".
func TestAuditHarmShown(t *testing.T) {
	for _, c := range harmCases {
		name := c.check
		if c.tag != "" {
			name += "/" + c.tag
		}
		switch {
		case c.h2:
			name += "/h2"
		case c.viaTCP:
			name += "/tcp"
		}
		if c.probe == probeIdle {
			name += "/idle"
		}
		t.Run(name, func(t *testing.T) { runHarmCase(t, c) })
	}
}

func runHarmCase(t *testing.T, c harmCase) {
	if c.streams > 0 {
		// This process and Envoy each hold two sockets per stream.
		testkit.RaiseFileLimit(t, uint64(4*c.streams+1024))
	}
	be := startRawBackend(t)
	be.resetFirst, be.hangUp, be.flood, be.stall = c.resetFirst, c.hangUp, c.flood, c.stall
	nowhere := testkit.FreePort(t)
	var sc *sidecar
	if c.sidecar {
		sc = startSidecar(t, nowhere)
		sc.overrideBody = c.overrideBody
	}
	vals := harmValues(t, c, be.port, nowhere)
	if c.routeTimeout != "" {
		vals["Timeout"] = c.routeTimeout
	}
	if c.match != "" {
		vals["Match"] = c.match
	}
	if c.frameWasm {
		vals["Filters"] = fmt.Sprintf(`- name: envoy.filters.http.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
    config:
      vm_config: { runtime: envoy.wasm.runtime.v8, code: { local: { filename: %q } } }
%s`, testkit.Binary(t, "framefilter.wasm"), c.upgradeFilters)
	}
	var kept *rawBackend
	if c.hangUp {
		kept = startRawBackend(t)
		vals["Backend2Port"] = kept.port
	}
	pressure := ""
	if c.overload != "" {
		pressure = t.TempDir() + "/pressure"
		writeAtomic(t, pressure, []byte("0"))
		vals["PressureFile"] = pressure
	}
	var cfg bytes.Buffer
	if err := harmTemplate.Execute(&cfg, vals); err != nil {
		t.Fatal(err)
	}
	e := testkit.StartEnvoyWithConfig(t, cfg.Bytes(), vals["AdminPort"].(int), 1, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	auditAgrees(ctx, t, e, c)
	if c.probe == probeHealth {
		if err := e.WaitStat(ctx, "cluster.backend.membership_healthy", func(v int64) bool { return v == 1 }); err != nil {
			t.Fatal(err)
		}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", vals["Port"])
	if c.viaTCP {
		addr = fmt.Sprintf("127.0.0.1:%d", vals["TCPPort"])
	}

	switch c.probe {
	case probeRefused:
		status, err := tryUpgrade(addr, c.h2)
		report(t, c, err != nil, fmt.Sprintf("upgrade answered %d: %v", status, err))
		return
	case probeProcessed:
		s := openStream(t, addr, c.h2)
		defer s.Close()
		for i := range 5 {
			if err := s.echo(fmt.Appendf(nil, "frame %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		n := sc.bodies.Load()
		report(t, c, n >= 5, fmt.Sprintf("5 frames echoed; the processor was sent %d body messages", n))
		return
	case probeReplay:
		s := openStream(t, addr, c.h2)
		defer s.Close()
		n := be.handshakes.Load()
		report(t, c, n > 1, fmt.Sprintf("the back end got the handshake %d times for one stream", n))
		return
	case probeOverflow:
		harmed, how := probeOverflowed(t, addr, c)
		report(t, c, harmed, how)
		evidenced(ctx, t, e, c, harmed, how)
		return
	case probeEjected:
		harmed, how := probeEjection(ctx, t, e, addr, be, kept)
		report(t, c, harmed, how)
		return
	case probeStalled:
		harmed, how := probeStalledReset(ctx, t, e, addr, c, be, pressure)
		report(t, c, harmed, how)
		evidenced(ctx, t, e, c, harmed, how)
		return
	case probeQueued:
		harmed, how := probeQueuedBytes(t, addr, c)
		report(t, c, harmed, how)
		evidenced(ctx, t, e, c, harmed, how)
		return
	case probeBursts:
		harmed, how := probeEveryBurst(ctx, t, e, addr)
		report(t, c, harmed, how)
		return
	}
	if c.probe == probeHeld {
		harmed, how := probeHandshakeHeld(t, addr, be, c.window)
		if sc != nil {
			how += fmt.Sprintf("; the sidecar got %d checks with %d body bytes", sc.checks.Load(), sc.bodyBytes.Load())
		}
		report(t, c, harmed, how)
		return
	}
	s := openStream(t, addr, c.h2)
	defer s.Close()
	if err := s.echo([]byte("hello")); err != nil {
		t.Fatalf("first frame: %v", err)
	}
	if c.probe == probeHealth {
		be.failHealth.Store(true)
	}
	if pressure != "" {
		writeAtomic(t, pressure, []byte("1"))
	}
	if c.before != "" {
		if err := e.WaitStat(ctx, c.before, func(v int64) bool { return v > 0 }); err != nil {
			t.Fatal(err)
		}
	}
	harmed, how := watch(s, c.probe, c.window)
	report(t, c, harmed, how)
	evidenced(ctx, t, e, c, harmed, how)
}

// harmValues fill harmTemplate for a case, on free ports.
func harmValues(t *testing.T, c harmCase, backendPort, nowherePort int) map[string]any {
	return map[string]any{
		"AdminPort": testkit.FreePort(t), "Port": testkit.FreePort(t), "TCPPort": testkit.FreePort(t),
		"BackendPort": backendPort, "NowherePort": nowherePort, "Timeout": "0s", "Match": "{ prefix: / }",
		"HCM": c.hcm, "Route": c.route, "Filters": c.upgradeFilters, "TCP": c.tcp, "Cluster": c.cluster,
		"AllowConnect": !c.noConnect, "Upgrade": !c.noUpgrade,
		"RESTFilters": c.restFilters, "SharedChain": c.sharedChain, "Overload": c.overload, "Listener": c.listener,
	}
}

// evidenced checks that a stream the case saw cut shows in the case's
// stat, and that the audit of the same Envoy now reports it as
// streams-cut where it reads that stat.
func evidenced(ctx context.Context, t *testing.T, e *testkit.Envoy, c harmCase, harmed bool, how string) {
	t.Helper()
	if !harmed || c.evidence == "" {
		return
	}
	if err := e.WaitStat(ctx, c.evidence, func(v int64) bool { return v > 0 }); err != nil {
		t.Errorf("the stream was harmed (%s) but %s stays 0: %v", how, c.evidence, err)
		return
	}
	if !auditReads[c.evidence] {
		return
	}
	rep := auditOf(ctx, t, e)
	for _, f := range rep.Findings {
		if f.Check == "streams-cut" && f.Path == "stats:"+c.evidence && f.Severity > audit.Info {
			return
		}
	}
	t.Errorf("after the cut the audit reports no streams-cut at stats:%s", c.evidence)
}

// auditReads are the counters of cut streams that the audit reports as
// streams-cut.
var auditReads = map[string]bool{
	"http.ws.downstream_rq_idle_timeout":               true,
	"http.ws.downstream_rq_max_duration_reached":       true,
	"cluster.backend.upstream_rq_max_duration_reached": true,
	"tcp.tcp.idle_timeout":                             true,
	"tcp.tcp.max_downstream_connection_duration":       true,
}

func auditOf(ctx context.Context, t *testing.T, e *testkit.Envoy) *audit.Report {
	t.Helper()
	in, err := audit.Fetch(ctx, &http.Client{}, e.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	in.ReadFile = audit.ReadFile
	rep, err := audit.Run(in)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// auditAgrees audits the case's Envoy: the check must be reported above
// info where the harm shows, at info saying "not shown" where not, and
// not at all for a bootstrap the check must leave alone.
func auditAgrees(ctx context.Context, t *testing.T, e *testkit.Envoy, c harmCase) {
	t.Helper()
	rep := auditOf(ctx, t, e)
	var got []string
	for _, f := range rep.Findings {
		if f.Check != c.check {
			continue
		}
		got = append(got, f.Severity.String())
		if !c.unflagged && (c.wantHarm && f.Severity > audit.Info || !c.wantHarm && f.Severity == audit.Info && strings.HasPrefix(f.Why, "not shown")) {
			return
		}
	}
	want := "above info"
	switch {
	case c.unflagged && got == nil:
		return
	case c.unflagged:
		want = "not at all"
	case !c.wantHarm:
		want = `at info, "not shown"`
	}
	t.Errorf("the audit reports %s at %v, want %s", c.check, got, want)
}

func report(t *testing.T, c harmCase, harmed bool, how string) {
	t.Helper()
	t.Logf("%s: %s", c.check, how)
	if harmed != c.wantHarm {
		t.Errorf("%s: harm %v, want %v: %s", c.check, harmed, c.wantHarm, how)
	}
}

// watch exchanges frames (or stays silent) until the stream ends or the
// window is over, and says which.
func watch(s *harmStream, probe harmProbe, window time.Duration) (bool, string) {
	start := time.Now()
	deadline := start.Add(window)
	if probe == probeIdle || probe == probeHealth {
		err := s.waitEnd(window)
		if err == nil {
			return false, fmt.Sprintf("silent stream still open after %v", window)
		}
		return true, fmt.Sprintf("stream ended after %v: %v", time.Since(start).Round(100*time.Millisecond), err)
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for n := 0; time.Now().Before(deadline); n++ {
		if err := s.echo(fmt.Appendf(nil, "frame %d", n)); err != nil {
			return true, fmt.Sprintf("stream ended after %v, %d frames: %v", time.Since(start).Round(100*time.Millisecond), n, err)
		}
		<-tick.C
	}
	return false, fmt.Sprintf("active stream kept for %v, every frame echoed unchanged", window)
}

// probeOverflowed holds c.streams streams open, then sends one more
// handshake: harm is that handshake refused, or held until one of the
// open streams ends.
func probeOverflowed(t *testing.T, addr string, c harmCase) (bool, string) {
	var open []*harmStream
	defer func() {
		for _, s := range open {
			s.Close()
		}
	}()
	for i := range c.streams {
		s, err := dialStream(addr, false)
		if err != nil {
			t.Fatalf("stream %d of %d: %v", i+1, c.streams, err)
		}
		open = append(open, s)
	}
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, harmUpgrade); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(conn)
	conn.SetReadDeadline(time.Now().Add(c.window))
	resp, err := http.ReadResponse(br, nil)
	switch {
	case err == nil && resp.StatusCode == http.StatusSwitchingProtocols:
		return false, fmt.Sprintf("with %d streams open, stream %d was upgraded too", c.streams, c.streams+1)
	case err == nil:
		return true, fmt.Sprintf("with %d streams open, stream %d was refused with %d", c.streams, c.streams+1, resp.StatusCode)
	case !isTimeout(err):
		return true, fmt.Sprintf("with %d streams open, stream %d failed: %v", c.streams, c.streams+1, err)
	}
	// Held: end one stream and see the held handshake through.
	open[0].Close()
	open = open[1:]
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	after := "then still no answer once a stream ended"
	if resp, err := http.ReadResponse(br, nil); err == nil {
		after = fmt.Sprintf("then answered %d once a stream ended", resp.StatusCode)
	}
	return true, fmt.Sprintf("with %d streams open, stream %d got no answer for %v, %s", c.streams, c.streams+1, c.window, after)
}

// probeEjection opens streams one after another: through the round
// robin, half land on the back end that resets them after the upgrade.
// Harm is that back end ejected, so that new streams avoid it.
func probeEjection(ctx context.Context, t *testing.T, e *testkit.Envoy, addr string, hangUp, kept *rawBackend) (bool, string) {
	var open []*harmStream
	defer func() {
		for _, s := range open {
			s.Close()
		}
	}()
	for range 12 {
		s, err := dialStream(addr, false)
		if err != nil {
			t.Logf("stream refused: %v", err)
			continue
		}
		open = append(open, s)
	}
	reset := hangUp.handshakes.Load()
	// The detector runs on Envoy's main thread: give it a moment to eject
	// before calling the outcome.
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := e.WaitStat(wctx, "cluster.backend.outlier_detection.ejections_enforced_total", func(v int64) bool { return v > 0 })
	n, _ := e.Stat(ctx, "cluster.backend.outlier_detection.ejections_enforced_total")
	if err != nil {
		return false, fmt.Sprintf("%d of 12 streams were reset by their back end right after the upgrade, %d kept; no host was ejected (ejections_enforced_total %d)",
			reset, kept.handshakes.Load(), n)
	}
	before := hangUp.handshakes.Load()
	for range 6 {
		if s, err := dialStream(addr, false); err == nil {
			open = append(open, s)
		}
	}
	return true, fmt.Sprintf("%d of 12 streams were reset by their back end right after the upgrade; that host was ejected (%d ejections) and got %d of the next 6 streams",
		reset, n, hangUp.handshakes.Load()-before)
}

// probeStalledReset opens a stream whose client stops reading while the
// back end floods it, waits until Envoy holds a full buffer of it, then
// raises the overload pressure to 1.
func probeStalledReset(ctx context.Context, t *testing.T, e *testkit.Envoy, addr string, c harmCase, be *rawBackend, pressure string) (bool, string) {
	s := openStream(t, addr, c.h2)
	defer s.Close()
	if err := e.WaitStat(ctx, "cluster.backend.upstream_flow_control_paused_reading_total", func(v int64) bool { return v > 0 }); err != nil {
		t.Fatalf("Envoy never paused reading the flood: %v", err)
	}
	held := be.flooded.Load()
	writeAtomic(t, pressure, []byte("1"))
	// Envoy closes the back end's connection when it resets the stream.
	wctx, cancel := context.WithTimeout(ctx, c.window)
	defer cancel()
	if err := e.WaitStat(wctx, "cluster.backend.upstream_cx_destroy", func(v int64) bool { return v > 0 }); err == nil {
		return true, fmt.Sprintf("a stream whose client had stopped reading (the back end had sent %d KiB) was reset once the pressure reached 1", held>>10)
	}
	return false, fmt.Sprintf("a stream whose client had stopped reading (the back end had sent %d KiB) was still open %v after the pressure reached 1", held>>10, c.window)
}

// probeQueuedBytes writes to a stream whose back end reads nothing until
// a write has made no progress for a few seconds: what got out by then
// sits in Envoy's buffers and the kernel's, stale by the time anyone
// reads it.
func probeQueuedBytes(t *testing.T, addr string, c harmCase) (bool, string) {
	s := openStream(t, addr, false)
	defer s.Close()
	conn := s.w.(net.Conn)
	chunk := bytes.Repeat([]byte("q"), 64<<10)
	sent := 0
	// Bounded: well past the case's mark, stop.
	for sent < 2*c.queued {
		// The deadline only tells a blocked sender from a slow one; a
		// loaded machine makes it stop early, which errs towards "kept".
		conn.SetWriteDeadline(time.Now().Add(3 * time.Second))
		n, err := conn.Write(chunk)
		sent += n
		if err != nil {
			break
		}
	}
	return sent >= c.queued, fmt.Sprintf("the sender got %d MiB of a stream out to a back end that read none of it before back-pressure stopped it (mark %d MiB)", sent>>20, c.queued>>20)
}

// probeEveryBurst echoes 20 frames of 16 KiB, one at a time, and counts
// how often Envoy paused reading either side of the stream.
func probeEveryBurst(ctx context.Context, t *testing.T, e *testkit.Envoy, addr string) (bool, string) {
	s := openStream(t, addr, false)
	defer s.Close()
	const frames = 20
	for i := range frames {
		frame := bytes.Repeat([]byte{byte('a' + i)}, 16<<10)
		if err := s.echo(frame); err != nil {
			return true, fmt.Sprintf("frame %d: %v", i, err)
		}
	}
	down, err := e.Stat(ctx, "http.ws.downstream_flow_control_paused_reading_total")
	if err != nil {
		t.Fatal(err)
	}
	up, err := e.Stat(ctx, "cluster.backend.upstream_flow_control_paused_reading_total")
	if err != nil {
		t.Fatal(err)
	}
	return down+up >= frames, fmt.Sprintf("%d frames of 16 KiB echoed unchanged; Envoy paused reading the client %d times and the back end %d times", frames, down, up)
}

// probeHandshakeHeld sends the upgrade and 16 KiB of frames behind it,
// then watches the window: harm is a handshake the back end never got.
func probeHandshakeHeld(t *testing.T, addr string, be *rawBackend, window time.Duration) (bool, string) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	frames := bytes.Repeat([]byte("f"), 16<<10)
	if _, err := conn.Write(append([]byte(harmUpgrade), frames...)); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(window))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	got := be.handshakes.Load()
	switch {
	case err == nil && resp.StatusCode == http.StatusSwitchingProtocols:
		return false, fmt.Sprintf("upgraded: the back end got %d handshakes", got)
	case err == nil:
		return got == 0, fmt.Sprintf("refused with %d after the frames, the back end got %d handshakes", resp.StatusCode, got)
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return got == 0, fmt.Sprintf("no answer within %v, the back end got %d handshakes", window, got)
	default:
		return got == 0, fmt.Sprintf("connection ended (%v), the back end got %d handshakes", err, got)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

const harmUpgrade = "GET /ws HTTP/1.1\r\nHost: audit\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAccept-Encoding: gzip\r\n\r\n"

// harmStream is a WebSocket through Envoy, carrying raw bytes: Envoy does
// not frame WebSockets, and the back end echoes bytes.
type harmStream struct {
	w      io.WriteCloser
	r      io.Reader
	closer func()
}

func (s *harmStream) Close() { s.closer() }

// echo sends p and reads it back, bounded so that a held frame fails.
func (s *harmStream) echo(p []byte) error {
	if _, err := s.w.Write(p); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	got := make([]byte, len(p))
	done := make(chan error, 1)
	go func() { _, err := io.ReadFull(s.r, got); done <- err }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if !bytes.Equal(got, p) {
			return fmt.Errorf("frame came back changed: %q", got)
		}
		return nil
	case <-time.After(10 * time.Second):
		s.closer()
		return errors.New("no echo within 10s: frame held")
	}
}

// waitEnd reads until the stream ends (an error) or the window is over
// (nil).
func (s *harmStream) waitEnd(window time.Duration) error {
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, s.r)
		if err == nil {
			err = io.EOF
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(window):
		return nil
	}
}

func openStream(t *testing.T, addr string, h2 bool) *harmStream {
	t.Helper()
	s, err := dialStream(addr, h2)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tryUpgrade opens a stream and closes it, returning the status of a
// refused upgrade.
func tryUpgrade(addr string, h2 bool) (int, error) {
	s, err := dialStream(addr, h2)
	if err != nil {
		var re *refusedError
		if errors.As(err, &re) {
			return re.status, err
		}
		return 0, err
	}
	s.Close()
	return 0, nil
}

type refusedError struct{ status int }

func (e *refusedError) Error() string { return fmt.Sprintf("upgrade refused with %d", e.status) }

func dialStream(addr string, h2 bool) (*harmStream, error) {
	if !h2 {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(conn, harmUpgrade); err != nil {
			conn.Close()
			return nil, err
		}
		br := bufio.NewReader(conn)
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		conn.SetReadDeadline(time.Time{})
		switch {
		case err != nil:
			conn.Close()
			return nil, fmt.Errorf("upgrade: %w", err)
		case resp.StatusCode != http.StatusSwitchingProtocols:
			conn.Close()
			return nil, &refusedError{resp.StatusCode}
		}
		return &harmStream{w: conn, r: br, closer: func() { conn.Close() }}, nil
	}
	tr := &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(ctx, http.MethodConnect, "http://"+addr+"/ws", pr)
	if err != nil {
		cancel()
		return nil, err
	}
	req.Header.Set(":protocol", "websocket")
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	closer := func() { cancel(); pw.Close(); tr.CloseIdleConnections() }
	resp, err := tr.RoundTrip(req)
	if err != nil {
		closer()
		return nil, fmt.Errorf("extended CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		closer()
		return nil, &refusedError{resp.StatusCode}
	}
	return &harmStream{w: pw, r: resp.Body, closer: func() { resp.Body.Close(); closer() }}, nil
}

// rawBackend answers a WebSocket upgrade with 101 and echoes bytes; a
// GET /health is answered 200, or 503 once failHealth is set.
type rawBackend struct {
	port       int
	handshakes atomic.Int64
	failHealth atomic.Bool
	resetFirst bool
	// hangUp resets every stream right after the 101; flood sends
	// without pause after the 101 instead of echoing; stall reads
	// nothing after the 101.
	hangUp, flood, stall bool
	stop                 chan struct{}
	// flooded counts the bytes flood wrote; floodEnded is set when a
	// write failed.
	flooded    atomic.Int64
	floodEnded atomic.Bool
}

func startRawBackend(t *testing.T) *rawBackend {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	be := &rawBackend{port: ln.Addr().(*net.TCPAddr).Port, stop: make(chan struct{})}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		close(be.stop)
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() { defer wg.Done(); be.serve(c) }()
		}
	}()
	return be
}

func (be *rawBackend) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.URL.Path == "/health" {
			status := "200 OK"
			if be.failHealth.Load() {
				status = "503 Service Unavailable"
			}
			fmt.Fprintf(c, "HTTP/1.1 %s\r\nContent-Length: 0\r\n\r\n", status)
			continue
		}
		if be.handshakes.Add(1) == 1 && be.resetFirst {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		switch {
		case be.hangUp:
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0)
			}
		case be.flood:
			chunk := bytes.Repeat([]byte("a"), 16<<10)
			for {
				n, err := c.Write(chunk)
				be.flooded.Add(int64(n))
				if err != nil {
					be.floodEnded.Store(true)
					return
				}
			}
		case be.stall:
			<-be.stop
		default:
			io.Copy(c, br)
		}
		return
	}
}

// sidecar is an external authorization and external processing server
// that allows everything and counts the request data it is sent.
type sidecar struct {
	authv3.UnimplementedAuthorizationServer
	extprocv3svc.UnimplementedExternalProcessorServer
	checks, bodyBytes, bodies atomic.Int64
	overrideBody              bool
}

func startSidecar(t *testing.T, port int) *sidecar {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	sc := &sidecar{}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, sc)
	extprocv3svc.RegisterExternalProcessorServer(srv, sc)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return sc
}

func (sc *sidecar) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	sc.checks.Add(1)
	http := req.GetAttributes().GetRequest().GetHttp()
	sc.bodyBytes.Add(int64(len(http.GetBody()) + len(http.GetRawBody())))
	return &authv3.CheckResponse{Status: &status.Status{Code: 0}}, nil
}

func (sc *sidecar) Process(stream extprocv3svc.ExternalProcessor_ProcessServer) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		resp := &extprocv3svc.ProcessingResponse{}
		switch r := req.GetRequest().(type) {
		case *extprocv3svc.ProcessingRequest_RequestHeaders:
			resp.Response = &extprocv3svc.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3svc.HeadersResponse{}}
			if sc.overrideBody {
				resp.ModeOverride = &extprocv3.ProcessingMode{RequestBodyMode: extprocv3.ProcessingMode_STREAMED, ResponseHeaderMode: extprocv3.ProcessingMode_SKIP}
			}
		case *extprocv3svc.ProcessingRequest_RequestBody:
			sc.bodies.Add(1)
			sc.bodyBytes.Add(int64(len(r.RequestBody.GetBody())))
			resp.Response = &extprocv3svc.ProcessingResponse_RequestBody{RequestBody: &extprocv3svc.BodyResponse{}}
		case *extprocv3svc.ProcessingRequest_ResponseHeaders:
			resp.Response = &extprocv3svc.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3svc.HeadersResponse{}}
		case *extprocv3svc.ProcessingRequest_ResponseBody:
			resp.Response = &extprocv3svc.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3svc.BodyResponse{}}
		case *extprocv3svc.ProcessingRequest_RequestTrailers:
			resp.Response = &extprocv3svc.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3svc.TrailersResponse{}}
		case *extprocv3svc.ProcessingRequest_ResponseTrailers:
			resp.Response = &extprocv3svc.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3svc.TrailersResponse{}}
		}
		if err := stream.Send(resp); err != nil {
			return nil
		}
	}
}
