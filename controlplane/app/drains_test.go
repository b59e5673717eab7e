package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

const voiceEndpoint = "127.0.0.1:8081"

// twoVoiceEndpoints is the example policy with a second voice endpoint: a
// back end's last endpoint in service cannot be drained.
func twoVoiceEndpoints(t *testing.T) string {
	t.Helper()
	return editFile(t, copyExample(t), "endpoints: [127.0.0.1:8081]", "endpoints: [127.0.0.1:8081, 127.0.0.1:8083]")
}

// editFile replaces the first old in the file at path with new.
func editFile(t *testing.T, path, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("%s has no %q", path, old)
	}
	b = bytes.Replace(b, []byte(old), []byte(new), 1)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// report is what an Envoy's load report says of the example's voice
// endpoint.
func report(live uint64) []*endpointv3.ClusterStats {
	return []*endpointv3.ClusterStats{{
		ClusterName: "voice",
		UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{{UpstreamEndpointStats: []*endpointv3.UpstreamEndpointStats{{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 8081},
			}}},
			TotalRequestsInProgress: live,
		}}}},
	}}
}

// voiceStatus is the EDS health status served for the voice endpoint, ""
// when EDS leaves it out.
func voiceStatus(a *App) string {
	if lb := voiceLbEndpoint(a); lb != nil {
		return lb.GetHealthStatus().String()
	}
	return ""
}

// voiceLbEndpoint is what EDS serves for the voice endpoint on 8081.
func voiceLbEndpoint(a *App) *endpointv3.LbEndpoint {
	for _, r := range a.Resources()[resource.EndpointType] {
		cla := r.(*endpointv3.ClusterLoadAssignment)
		if cla.GetClusterName() != "voice" {
			continue
		}
		for _, lb := range cla.GetEndpoints()[0].GetLbEndpoints() {
			if lb.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue() == 8081 {
				return lb
			}
		}
	}
	return nil
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestDrainLifecycle: a drained endpoint is DRAINING in EDS while load
// reports show streams on it, leaves EDS once they show none (or at the
// deadline, streams left or not), and comes back when the drain is
// cancelled.
func TestDrainLifecycle(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := New(ctx, Config{
		PolicyFile: twoVoiceEndpoints(t), XDSAddr: "127.0.0.1:0", WasmPath: "/x.wasm",
		LoadReportInterval: 50 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	go a.Run(ctx)

	a.streams.Record("envoy-1", report(2))
	d, err := a.DrainEndpoint(ctx, "voice", voiceEndpoint, time.Minute, false)
	if err != nil {
		t.Fatal(err)
	}
	if d.GetState() != adminv1.DrainState_DRAINING || d.GetLive() != 2 {
		t.Errorf("drain = %v, want DRAINING with 2 live", d)
	}
	if got := voiceStatus(a); got != "DRAINING" {
		t.Fatalf("EDS says %q, want DRAINING", got)
	}
	// Reports with streams keep it DRAINING, however many come.
	for range 5 {
		time.Sleep(60 * time.Millisecond)
		a.streams.Record("envoy-1", report(1))
	}
	a.stepDrains(time.Now())
	if got := voiceStatus(a); got != "DRAINING" {
		t.Fatalf("with a stream left EDS says %q, want DRAINING", got)
	}
	a.streams.Record("envoy-1", report(0))
	waitFor(t, "the endpoint leaves EDS at no stream", func() bool { return voiceStatus(a) == "" })
	ds := a.Drains()
	if len(ds) != 1 || ds[0].GetState() != adminv1.DrainState_DRAINED || ds[0].GetEndedBy() != "no_streams" {
		t.Errorf("drains = %v, want one DRAINED by no_streams", ds)
	}

	if _, err := a.DrainEndpoint(ctx, "voice", voiceEndpoint, 0, true); err != nil {
		t.Fatal(err)
	}
	if got := voiceStatus(a); got != "UNKNOWN" {
		t.Errorf("after cancel EDS says %q, want no status (healthy)", got)
	}

	// At the deadline the endpoint leaves EDS with streams still on it.
	a.streams.Record("envoy-1", report(3))
	if _, err := a.DrainEndpoint(ctx, "voice", voiceEndpoint, 200*time.Millisecond, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the endpoint leaves EDS at the deadline", func() bool {
		a.streams.Record("envoy-1", report(3))
		return voiceStatus(a) == ""
	})
	if ds := a.Drains(); ds[0].GetEndedBy() != "deadline" || ds[0].GetLive() != 3 {
		t.Errorf("drains = %v, want ended by the deadline with 3 live", ds)
	}
}

func TestDrainRefusals(t *testing.T) {
	_, client, _ := startApp(t, copyExample(t))
	_, err := client.DrainEndpoint(authed(context.Background()), &adminv1.DrainEndpointRequest{Backend: "voice", Endpoint: voiceEndpoint})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "last endpoint") {
		t.Errorf("draining a back end's only endpoint: %v, want INVALID_ARGUMENT", err)
	}
	_, client, _ = startApp(t, twoVoiceEndpoints(t))
	ctx := authed(context.Background())
	for _, tt := range []struct {
		name string
		req  *adminv1.DrainEndpointRequest
		want codes.Code
	}{
		{"unknown back end", &adminv1.DrainEndpointRequest{Backend: "nope", Endpoint: voiceEndpoint}, codes.NotFound},
		{"unknown endpoint", &adminv1.DrainEndpointRequest{Backend: "voice", Endpoint: "127.0.0.1:1"}, codes.NotFound},
		{"cancel of no drain", &adminv1.DrainEndpointRequest{Backend: "voice", Endpoint: voiceEndpoint, Cancel: true}, codes.NotFound},
		{"deadline too long", &adminv1.DrainEndpointRequest{Backend: "voice", Endpoint: voiceEndpoint, Deadline: durationpb.New(25 * time.Hour)}, codes.InvalidArgument},
		{"negative deadline", &adminv1.DrainEndpointRequest{Backend: "voice", Endpoint: voiceEndpoint, Deadline: durationpb.New(-time.Second)}, codes.InvalidArgument},
		{"no endpoint", &adminv1.DrainEndpointRequest{Backend: "voice"}, codes.InvalidArgument},
	} {
		_, err := client.DrainEndpoint(ctx, tt.req)
		if status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.want)
		}
	}
}
