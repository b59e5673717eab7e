package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/directpipe/directpipe/controlplane/audit"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// harmCase is one audit finding put on a listener of its own, and what a
// live stream through that listener meets.
type harmCase struct {
	check string // the audit check the listener trips
	name  string // the listener's name, also in the finding's path
	tcp   bool   // tcp_proxy listener rather than an HTTP connection manager

	hcm, filter, route, tcpProxy string // config fragments (audit_harm.yaml)
	header                       http.Header

	// idle holds the stream silent; otherwise it echoes a frame every
	// 50 ms. Either way for hold.
	idle bool
	hold time.Duration

	// harm: Envoy 1.40 ends the stream (or refuses it) within hold. Where
	// it does not, the audit must report the finding as info, "not shown".
	harm bool
}

var harmCases = []harmCase{
	{check: "stream-idle-timeout", name: "stream_idle", hcm: "stream_idle_timeout: 1s", idle: true, hold: 4 * time.Second, harm: true},
	{check: "max-stream-duration", name: "stream_age", route: "max_stream_duration: { max_stream_duration: 1s }", hold: 4 * time.Second, harm: true},
	{check: "max-connection-duration", name: "connection_age", hcm: "common_http_protocol_options: { max_connection_duration: 1s }\n          drain_timeout: 1s", hold: 5 * time.Second},
	{check: "route-timeout", name: "route_timeout", route: "timeout: 1s", hold: 4 * time.Second},
	{check: "buffer-on-upgrade", name: "buffered", filter: `name: envoy.filters.http.buffer
              typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer, max_request_bytes: 65536 }`, hold: 4 * time.Second, harm: true},
	{check: "compression-on-upgrade", name: "compressed", header: http.Header{"Accept-Encoding": {"gzip"}}, filter: `name: envoy.filters.http.compressor
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor
                compressor_library: { name: gzip, typed_config: { "@type": type.googleapis.com/envoy.extensions.compression.gzip.compressor.v3.Gzip } }`, hold: 3 * time.Second},
	{check: "tcp-idle-timeout", name: "raw_idle", tcp: true, tcpProxy: "idle_timeout: 1s", idle: true, hold: 4 * time.Second, harm: true},
	{check: "tcp-max-duration", name: "raw_age", tcp: true, tcpProxy: "max_downstream_connection_duration: 1s", hold: 4 * time.Second, harm: true},
}

// TestAuditHarm shows, on a real Envoy 1.40, the harm each of these audit
// findings claims: a stream through a listener configured that way is cut
// or refused. Where the stream lives through it, the audit must say so: the
// finding is info and its text says "not shown". Every case runs on one
// Envoy, in parallel.
func TestAuditHarm(t *testing.T) {
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	backend := testkit.StartBackend(t)
	_, voicePort, _ := net.SplitHostPort(backend.VoiceAddr)
	type listener struct {
		Name, HCM, Filter, Route, TCPProxy string
		Port                               int
	}
	vals := map[string]any{"AdminPort": testkit.FreePort(t), "VoicePort": voicePort}
	var httpL, tcpL []listener
	ports := map[string]int{}
	for _, c := range harmCases {
		l := listener{Name: c.name, HCM: c.hcm, Filter: c.filter, Route: c.route, TCPProxy: c.tcpProxy, Port: testkit.FreePort(t)}
		ports[c.name] = l.Port
		if c.tcp {
			tcpL = append(tcpL, l)
		} else {
			httpL = append(httpL, l)
		}
	}
	vals["HTTP"], vals["TCP"] = httpL, tcpL
	cfg := render(t, filepath.Join(root, "envoy", "e2e", "testdata", "audit_harm.yaml"), vals)
	e := testkit.StartEnvoyWithConfig(t, cfg, vals["AdminPort"].(int), 1, time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in, err := audit.Fetch(ctx, &http.Client{}, e.AdminURL())
	if err != nil {
		t.Fatal(err)
	}
	in.ReadFile = audit.ReadFile
	rep, err := audit.Run(in)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range harmCases {
		t.Run(c.check, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			url := fmt.Sprintf("ws://127.0.0.1:%d/v1/voice", ports[c.name])
			cut, err := liveStream(ctx, url, c.header, c.idle, c.hold)
			if harmed := err != nil; harmed != c.harm {
				t.Errorf("%s: want harm %v; the stream %s", c.check, c.harm, outcome(cut, err, c.hold))
			} else {
				t.Logf("%s: the stream %s", c.check, outcome(cut, err, c.hold))
			}
			f, ok := findingOn(rep, c.check, c.name)
			if !ok {
				t.Fatalf("the audit reported no %s on listener %s", c.check, c.name)
			}
			notShown := strings.Contains(f.Why, "not shown")
			switch {
			case c.harm && (f.Severity == audit.Info || notShown):
				t.Errorf("%s is shown to harm a stream, but the audit reports it as %s: %q", c.check, f.Severity, f.Why)
			case !c.harm && (f.Severity != audit.Info || !notShown):
				t.Errorf("%s harms no stream on Envoy 1.40, but the audit reports it as %s: %q (want info, \"not shown\")", c.check, f.Severity, f.Why)
			}
		})
	}
}

// liveStream opens a WebSocket and holds it for d, silent or echoing a
// frame every 50 ms. It returns when the stream ends, with the error that
// ended it, or after d with nil.
func liveStream(ctx context.Context, url string, h http.Header, idle bool, d time.Duration) (time.Duration, error) {
	start := time.Now()
	// A handshake that is not answered within the hold is harm too (a
	// filter holding the upgrade request).
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	c, _, err := websocket.Dial(dctx, url, &websocket.DialOptions{HTTPHeader: h})
	if err != nil {
		return 0, fmt.Errorf("handshake: %w", err)
	}
	defer c.CloseNow()
	if idle {
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, _, err := c.Read(rctx)
		if errors.Is(err, context.DeadlineExceeded) || rctx.Err() != nil {
			return d, nil
		}
		return time.Since(start), err
	}
	for i := 0; time.Since(start) < d; i++ {
		msg := []byte(strconv.Itoa(i))
		if err := c.Write(ctx, websocket.MessageBinary, msg); err != nil {
			return time.Since(start), err
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, got, err := c.Read(rctx)
		cancel()
		if err != nil {
			return time.Since(start), err
		}
		if string(got) != string(msg) {
			return time.Since(start), fmt.Errorf("frame %d came back as %q", i, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return d, nil
}

func outcome(cut time.Duration, err error, hold time.Duration) string {
	if err == nil {
		return fmt.Sprintf("lived through %v", hold)
	}
	return fmt.Sprintf("ended after %v: %v", cut.Round(100*time.Millisecond), err)
}

func findingOn(rep *audit.Report, check, listener string) (audit.Finding, bool) {
	for _, f := range rep.Findings {
		if f.Check == check && strings.Contains(f.Path, "["+listener+"]") {
			return f, true
		}
	}
	return audit.Finding{}, false
}
