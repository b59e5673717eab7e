package e2e

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/examples/probe/voiceprobe"
)

// TestModuleNotEnteredPerFrame proves the per-frame promise in a real
// Envoy rather than from the export list: the module counts every callback
// it serves, by the kind of plugin it is for, and an HTTP WebSocket of 500
// frames enters it exactly as often as one of 10. The same module, in the
// same VM, serves a tcp mode route beside it, whose frames do enter it:
// the counter is live.
func TestModuleNotEnteredPerFrame(t *testing.T) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStack(t, false, func(p *policyParams) {
		p.TCP = tcpAddr
		// A route with client address lists: the check is one host call
		// at the handshake, not a callback, and nothing per frame.
		p.RoutesYAML = "  - { name: listed, match: { path: /v1/listed }, kind: websocket, backend: voice, auth: demo, clients: { allow: [127.0.0.0/8], deny: [10.0.0.0/8] } }"
	})
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	header := http.Header{"Authorization": {"Bearer " + validToken(t)}}
	const (
		httpCalls = "wasmcustom.directpipe_vm_callbacks_http"
		tcpCalls  = "wasmcustom.directpipe_vm_callbacks_tcp"
	)
	// calls runs one stream and returns how much the counter moved. A
	// stream's callbacks are added when Envoy deletes its context, which
	// happens after the close: wait for the counter to move.
	calls := func(url, counter string, frames int) int64 {
		t.Helper()
		before := s.stat(t, counter)
		res, err := voiceprobe.Run(context.Background(), voiceprobe.Config{
			URL: url, Header: header, Streams: 1, Frames: frames, Interval: time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Received != frames || res.Disconnects != 0 {
			t.Fatalf("%s: %d of %d frames back, %d disconnects (%v)", url, res.Received, frames, res.Disconnects, res.Streams[0].Error)
		}
		var after int64
		eventually(t, func() (bool, string) {
			after = s.stat(t, counter)
			return after > before, fmt.Sprintf("%s stayed at %d after a stream", counter, before)
		})
		return after - before
	}
	httpURL := s.listenURL("ws", "/v1/voice")
	short := calls(httpURL, httpCalls, 10)
	long := calls(httpURL, httpCalls, 500)
	t.Logf("HTTP stream: %d callbacks for 10 frames, %d for 500", short, long)
	// proxy_on_context_create, proxy_on_request_headers, proxy_on_delete:
	// no proxy_on_done, so a stream's end (where its quota is given back)
	// is one call.
	if short != 3 {
		t.Errorf("an HTTP stream entered the VM %d times, want 3", short)
	}
	if long != short {
		t.Errorf("an HTTP stream of 500 frames entered the VM %d times, one of 10 frames %d: frames enter it", long, short)
	}
	listed := calls(s.listenURL("ws", "/v1/listed"), httpCalls, 500)
	t.Logf("HTTP stream on a route with client address lists: %d callbacks for 500 frames", listed)
	if listed != short {
		t.Errorf("a stream on a route with client lists entered the VM %d times, one without %d", listed, short)
	}
	tcp := calls("ws://"+tcpAddr+"/v1/voice", tcpCalls, 500)
	t.Logf("tcp mode stream: %d callbacks for 500 frames", tcp)
	if tcp <= long {
		t.Errorf("a tcp mode stream of 500 frames entered the VM %d times: the counter is not counting", tcp)
	}
}

// stat returns one of Envoy's counters, 0 if it does not exist yet.
func (s *stack) stat(t testing.TB, name string) int64 {
	t.Helper()
	stats, err := s.envoy.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return stats[name]
}
