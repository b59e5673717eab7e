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
			l, err := listener(&policyv1.Listener{Name: "public", Address: "127.0.0.1:10000", Limits: tt.limits}, FilterWasm)
			if err != nil {
				t.Fatal(err)
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			if got := hcm.GetCommonHttpProtocolOptions().GetIdleTimeout().AsDuration(); got != tt.want {
				t.Errorf("idle timeout %v, want %v", got, tt.want)
			}
		})
	}
}
