package streams

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

func ep(host string, port uint32, live uint64) *endpointv3.UpstreamEndpointStats {
	return &endpointv3.UpstreamEndpointStats{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		TotalRequestsInProgress: live,
	}
}

func cluster(name, service string, eps ...*endpointv3.UpstreamEndpointStats) *endpointv3.ClusterStats {
	return &endpointv3.ClusterStats{
		ClusterName: name, ClusterServiceName: service,
		UpstreamLocalityStats: []*endpointv3.UpstreamLocalityStats{{UpstreamEndpointStats: eps}},
	}
}

func TestCounts(t *testing.T) {
	now := time.Unix(1000, 0)
	s := New(0)
	s.now = func() time.Time { return now }

	s.Record("envoy-a", []*endpointv3.ClusterStats{
		cluster("voice", "", ep("127.0.0.1", 9001, 3), ep("127.0.0.1", 9002, 0)),
		cluster("voice~agent", "voice", ep("127.0.0.1", 9001, 2)),
	})
	s.Record("envoy-b", []*endpointv3.ClusterStats{cluster("voice", "", ep("127.0.0.1", 9001, 4))})

	got := s.Counts()
	want := []Count{
		{Node: "envoy-a", Backend: "voice", Endpoint: "127.0.0.1:9001", Live: 3},
		{Node: "envoy-b", Backend: "voice", Endpoint: "127.0.0.1:9001", Live: 4},
		{Node: "envoy-a", Backend: "voice", Route: "agent", Endpoint: "127.0.0.1:9001", Live: 2},
	}
	if len(got) != len(want) {
		t.Fatalf("Counts() = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Counts()[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
	if n := Live(got, "voice", "127.0.0.1:9001"); n != 9 {
		t.Errorf("Live(voice, 9001) = %d, want 9", n)
	}

	// A report replaces the last one: what it leaves out is 0.
	s.Record("envoy-b", nil)
	if n := Live(s.Counts(), "voice", "127.0.0.1:9001"); n != 5 {
		t.Errorf("after envoy-b reports nothing: Live = %d, want 5", n)
	}

	// A node silent for several intervals counts for nothing.
	now = now.Add(staleAfter + time.Second)
	s.Record("envoy-b", []*endpointv3.ClusterStats{cluster("voice", "", ep("127.0.0.1", 9001, 1))})
	if n := Live(s.Counts(), "voice", "127.0.0.1:9001"); n != 1 {
		t.Errorf("with envoy-a stale: Live = %d, want 1", n)
	}
	if nodes := s.Nodes(); len(nodes) != 1 || nodes[0] != "envoy-b" {
		t.Errorf("Nodes() = %v, want [envoy-b]", nodes)
	}
}

func TestRecordBounded(t *testing.T) {
	s := New(0)
	var eps []*endpointv3.UpstreamEndpointStats
	for i := range maxEndpoints + 10 {
		eps = append(eps, ep("10.0.0.1", uint32(i%60000+1), 1))
	}
	s.Record("n", []*endpointv3.ClusterStats{cluster("voice", "", eps...)})
	if n := len(s.Counts()); n != maxEndpoints {
		t.Errorf("kept %d endpoints, want the bound %d", n, maxEndpoints)
	}
	for i := range maxNodes + 5 {
		s.Record(string(rune('a'+i%26))+time.Duration(i).String(), nil)
	}
	if n := len(s.Nodes()); n != maxNodes {
		t.Errorf("kept %d nodes, want the bound %d", n, maxNodes)
	}
}
