package app

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// leastStreamsExample is the example policy with two voice endpoints
// balanced by least_streams.
func leastStreamsExample(t *testing.T) string {
	t.Helper()
	return editFile(t, twoVoiceEndpoints(t), "endpoints: [127.0.0.1:8081, 127.0.0.1:8083]",
		"endpoints: [127.0.0.1:8081, 127.0.0.1:8083]\n    lb: least_streams\n    max_streams: 10000")
}

// voiceWeight is the EDS weight served for the voice endpoint on 8081.
func voiceWeight(a *App) uint32 { return voiceLbEndpoint(a).GetLoadBalancingWeight().GetValue() }

// TestStreamWeightsFollowCounts: least_streams weights move with the
// fleet's counts, in EDS only, and a count that moves no weight serves
// nothing.
func TestStreamWeightsFollowCounts(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, Config{
		PolicyFile: leastStreamsExample(t), XDSAddr: "127.0.0.1:0", WasmPath: "/x.wasm",
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	weigh := func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		moved := a.weighStreams()
		if moved {
			a.serveAgain(ctx, "test")
		}
		return moved
	}
	if w := voiceWeight(a); w != 1000 {
		t.Fatalf("idle weight %d, want 1000", w)
	}
	if weigh() {
		t.Error("no counts moved a weight")
	}
	listeners := a.xds.Versions()[resource.ListenerType]
	a.streams.Record("envoy-1", report(101))
	if !weigh() {
		t.Fatal("101 streams on one endpoint moved no weight")
	}
	if w := voiceWeight(a); w != 1 {
		t.Errorf("the loaded endpoint weighs %d, want 1 (the next streams all go to the idle one)", w)
	}
	// One more stream there moves no weight: nothing to push.
	a.streams.Record("envoy-1", report(102))
	if weigh() {
		t.Error("a count that moves no weight asked for a push")
	}
	if got := gaugeOf(t, a, "directpipe_streams_weight", "127.0.0.1:8083"); got != 1000 {
		t.Errorf("/metrics gives the idle endpoint weight %v, want 1000", got)
	}
	if got := a.xds.Versions()[resource.ListenerType]; got != listeners {
		t.Errorf("listener version moved from %q to %q", listeners, got)
	}
}

// gaugeOf is a gauge's value for an endpoint, as /metrics has it.
func gaugeOf(t *testing.T, a *App, name, endpoint string) float64 {
	t.Helper()
	families, err := a.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "endpoint" && l.GetValue() == endpoint {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("/metrics has no %s for %s", name, endpoint)
	return 0
}
