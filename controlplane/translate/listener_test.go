package translate

import (
	"testing"
	"time"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// TestConnectionIdleTimeout: a listener facing clients closes idle
// connections after a minute, one behind trusted proxies after five (a
// load balancer's pool must close first), and the policy's value wins
// over both.
func TestConnectionIdleTimeout(t *testing.T) {
	tests := []struct {
		name   string
		limits *policyv1.ListenerLimits
		want   time.Duration
	}{
		{"facing clients", nil, time.Minute},
		{"behind a load balancer", &policyv1.ListenerLimits{TrustedProxyHops: 1}, 5 * time.Minute},
		{"set", &policyv1.ListenerLimits{ConnectionIdleTimeout: durationpb.New(2 * time.Second)}, 2 * time.Second},
		{"set behind a load balancer", &policyv1.ListenerLimits{TrustedProxyHops: 1, ConnectionIdleTimeout: durationpb.New(2 * time.Minute)}, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hcm := hcmOf(t, &policyv1.Listener{Name: "public", Address: "127.0.0.1:10000", Limits: tt.limits})
			if got := hcm.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration(); got != tt.want {
				t.Errorf("idle timeout %v, want %v", got, tt.want)
			}
		})
	}
}

// TestHTTP2Keepalive: an HTTP/2 listener PINGs its clients by default, so
// a client that vanished without closing does not hold its WebSockets
// until their idle timeout; the policy's values win; an HTTP/1.1-only
// listener has no HTTP/2 options at all.
func TestHTTP2Keepalive(t *testing.T) {
	tests := []struct {
		name                   string
		http2                  bool
		limits                 *policyv1.ListenerLimits
		wantInterval, wantWait time.Duration
	}{
		{"default", true, nil, DefaultHTTP2KeepaliveInterval, DefaultHTTP2KeepaliveTimeout},
		{"set", true, &policyv1.ListenerLimits{Http2KeepaliveInterval: durationpb.New(5 * time.Second), Http2KeepaliveTimeout: durationpb.New(2 * time.Second)}, 5 * time.Second, 2 * time.Second},
		{"interval alone", true, &policyv1.ListenerLimits{Http2KeepaliveInterval: durationpb.New(time.Minute)}, time.Minute, DefaultHTTP2KeepaliveTimeout},
		{"HTTP/1.1 only", false, nil, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hcm := hcmOf(t, &policyv1.Listener{Name: "public", Address: "127.0.0.1:10000", Http2: tt.http2, Limits: tt.limits})
			ka := hcm.GetHttp2ProtocolOptions().GetConnectionKeepalive()
			if !tt.http2 {
				if hcm.GetHttp2ProtocolOptions() != nil {
					t.Fatalf("HTTP/2 options on an HTTP/1.1 listener: %v", hcm.GetHttp2ProtocolOptions())
				}
				return
			}
			if got := ka.GetInterval().AsDuration(); got != tt.wantInterval {
				t.Errorf("interval %v, want %v", got, tt.wantInterval)
			}
			if got := ka.GetTimeout().AsDuration(); got != tt.wantWait {
				t.Errorf("timeout %v, want %v", got, tt.wantWait)
			}
		})
	}
}

// hcmOf is the HTTP connection manager of the listener translated from l.
func hcmOf(t *testing.T, l *policyv1.Listener) *hcmv3.HttpConnectionManager {
	t.Helper()
	out, err := listener(l, FilterWasm)
	if err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	if err := out.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	return hcm
}
