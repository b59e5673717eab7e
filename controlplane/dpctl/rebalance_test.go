package dpctl

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

func TestPrintRebalance(t *testing.T) {
	steps := func() []*adminv1.RebalanceStep {
		return []*adminv1.RebalanceStep{
			{Endpoint: "10.0.0.1:8081", Live: 100, Shed: 10, Asked: 10},
			{Endpoint: "10.0.0.2:8081", Live: 95, Shed: 5, Error: "connection refused"},
			{Endpoint: "10.0.0.3:8081", Live: 60},
		}
	}
	for _, tc := range []struct {
		name string
		resp *adminv1.RebalanceResponse
		want []string
	}{
		{"dry run", &adminv1.RebalanceResponse{Backend: "voice", Steps: steps(), Window: durationpb.New(10 * time.Second)},
			[]string{"rebalance voice: 255 live streams over 3 endpoints", "dry run: 15 streams would be ended with Close 1001 over 10s"}},
		{"ran", &adminv1.RebalanceResponse{Backend: "voice", Steps: steps(), Window: durationpb.New(3 * time.Second), Ran: true},
			[]string{"10.0.0.1:8081  100   10    10", "failed: connection refused", "asked the back ends to end 10 streams with Close 1001 over 3s"}},
		{"even", &adminv1.RebalanceResponse{Backend: "voice", Steps: []*adminv1.RebalanceStep{{Endpoint: "10.0.0.1:8081", Live: 5}}},
			[]string{"nothing to shed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			printRebalance(&out, tc.resp)
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
}
