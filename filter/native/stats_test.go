//go:build cgo

package main

import (
	"reflect"
	"testing"

	"github.com/directpipe/directpipe/filter/contract"
)

// TestIdentityStatNames maps the gate's per-identity stat names onto the
// labelled stats the config defines: the label values are the parts of
// the name the gate escaped, and names of stats the config could not
// define, or that are not per-identity, map to nothing.
func TestIdentityStatNames(t *testing.T) {
	s := &identityStats{live: 7, liveOK: true, unlabelled: 8, unlabelledOK: true,
		denied: map[string]statID{contract.ReasonStreamQuota: 9}}
	for _, tc := range []struct {
		name   string
		gauge  bool
		id     statID
		labels []string
		ok     bool
	}{
		{contract.MetricQuotaLivePrefix + "voice.tenant_2ea", true, 7, []string{"voice", "tenant_2ea"}, true},
		{contract.MetricQuotaLiveUnlabelled, true, 8, nil, true},
		{contract.MetricQuotaLivePrefix + "nodot", true, 0, nil, false},
		{contract.MetricAllowed, true, 0, nil, false},
		{contract.MetricQuotaDeniedPrefix + contract.ReasonStreamQuota + ".alice", false, 9, []string{"alice"}, true},
		{contract.MetricQuotaDeniedPrefix + contract.ReasonHandshakeRate + ".alice", false, 0, nil, false},
		{contract.MetricDeniedPrefix + contract.ReasonStreamQuota, false, 0, nil, false},
	} {
		var id statID
		var labels []string
		var ok bool
		if tc.gauge {
			id, labels, ok = s.liveGauge(tc.name)
		} else {
			id, labels, ok = s.refusalCounter(tc.name)
		}
		if ok != tc.ok || ok && (id != tc.id || !reflect.DeepEqual(labels, tc.labels)) {
			t.Errorf("%s: %d %q %v, want %d %q %v", tc.name, id, labels, ok, tc.id, tc.labels, tc.ok)
		}
	}
}

// TestGaugeTableNeverNegative: a release counted where the admission was
// not (or twice) leaves the gauge at zero, never below: Envoy's gauges
// are unsigned.
func TestGaugeTableNeverNegative(t *testing.T) {
	g := &gaugeTable{values: map[string]int64{}}
	if v := g.add("a", 2, nil); v != 2 {
		t.Fatalf("add 2: %d", v)
	}
	if v := g.add("a", -3, nil); v != 0 {
		t.Fatalf("add -3 to 2: %d, want 0", v)
	}
	var published int64 = -1
	if v := g.add("a", 1, func(v int64) { published = v }); v != 1 || published != 1 {
		t.Fatalf("add 1 after the floor: %d, published %d; want 1", v, published)
	}
}
