package main

// #include "dp_abi.h"
import "C"

import (
	"runtime"
	"strings"
	"sync"

	"github.com/directpipe/directpipe/filter/contract"
)

// The gate names a stat per identity while streams run: a live-stream
// gauge when a stream is admitted under a quota, a refusal counter when
// one is refused. Envoy freezes a dynamic module config's stats once the
// config is created, so the native build defines one labelled stat per
// kind up front and maps each of the gate's names onto it with label
// values. Envoy renders a labelled stat as <name>.<label>.<value>..., so
// the Wasm build's
//
//	wasmcustom.directpipe_quota_live.<policy>.<identity>
//	wasmcustom.directpipe_quota_denied_<reason>.<identity>
//
// are, in the native build,
//
//	dynamicmodulescustom.directpipe_quota_live.policy.<policy>.identity.<identity>
//	dynamicmodulescustom.directpipe_quota_denied_<reason>.identity.<identity>
//
// (the values escaped as the gate writes them, so they hold no '.'), and
// Prometheus shows them with policy and identity labels.
// identityStats are a config's labelled stats, defined with the config.
type identityStats struct {
	live, unlabelled     statID
	liveOK, unlabelledOK bool
	denied               map[string]statID // by reason
}

// statID is Envoy's id of a stat a config defined.
type statID uint64

// quotaReasons are the reasons the gate counts per identity.
var quotaReasons = []string{contract.ReasonStreamQuota, contract.ReasonHandshakeRate}

// defineIdentityStats defines the labelled stats while Envoy creates the
// config (config is Envoy's config handle); a stat Envoy refuses stays
// undefined and its updates are dropped.
func defineIdentityStats(config C.uintptr_t) identityStats {
	s := identityStats{denied: map[string]statID{}}
	s.live, s.liveOK = defineStat(config, contract.MetricQuotaLive, true, contract.LabelPolicy, contract.LabelIdentity)
	s.unlabelled, s.unlabelledOK = defineStat(config, contract.MetricQuotaLiveUnlabelled, true)
	for _, r := range quotaReasons {
		if id, ok := defineStat(config, contract.MetricQuotaDeniedPrefix+r, false, contract.LabelIdentity); ok {
			s.denied[r] = id
		}
	}
	return s
}

func defineStat(config C.uintptr_t, name string, gauge bool, labels ...string) (statID, bool) {
	if config == 0 {
		return 0, false
	}
	bufs, pin := labelBuffers(labels)
	defer pin.Unpin()
	var id C.size_t
	var rc C.int
	if gauge {
		rc = C.dp_define_gauge(config, buffer(name), first(bufs), C.size_t(len(bufs)), &id)
	} else {
		rc = C.dp_define_labelled_counter(config, buffer(name), first(bufs), C.size_t(len(bufs)), &id)
	}
	return statID(id), rc == 0
}

// labelBuffers lends labels to Envoy for one call: the array is Go memory
// holding pointers to Go strings, which C may see only while pinned.
func labelBuffers(labels []string) ([]C.dp_buffer, *runtime.Pinner) {
	pin := &runtime.Pinner{}
	bufs := make([]C.dp_buffer, len(labels))
	for i, l := range labels {
		bufs[i] = buffer(l)
		if bufs[i].ptr != nil {
			pin.Pin(bufs[i].ptr)
		}
	}
	return bufs, pin
}

func first(b []C.dp_buffer) *C.dp_buffer {
	if len(b) == 0 {
		return nil
	}
	return &b[0]
}

// liveGauge maps one of the gate's gauge names onto a labelled stat: its
// id and label values.
func (s *identityStats) liveGauge(name string) (statID, []string, bool) {
	if name == contract.MetricQuotaLiveUnlabelled {
		return s.unlabelled, nil, s.unlabelledOK
	}
	rest, ok := strings.CutPrefix(name, contract.MetricQuotaLivePrefix)
	if !ok || !s.liveOK {
		return 0, nil, false
	}
	policy, identity, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, nil, false
	}
	return s.live, []string{policy, identity}, true
}

// refusalCounter maps one of the gate's refusal counter names
// (<prefix><reason>.<identity label>) onto a labelled counter.
func (s *identityStats) refusalCounter(name string) (statID, []string, bool) {
	rest, ok := strings.CutPrefix(name, contract.MetricQuotaDeniedPrefix)
	if !ok {
		return 0, nil, false
	}
	reason, label, ok := strings.Cut(rest, ".")
	if !ok {
		return 0, nil, false
	}
	id, ok := s.denied[reason]
	return id, []string{label}, ok
}

// gauges holds the value of every per-identity gauge of the process. The
// gate adds deltas from every worker and config, the network filter's
// included, which cannot set a labelled stat; the HTTP filter sets
// Envoy's gauge to the value held here, so a delta that could not reach
// Envoy (no stream to set it through) shows with the next one, and a
// gauge never goes below zero (Envoy's gauges are unsigned).
var gauges = &gaugeTable{values: map[string]int64{}}

type gaugeTable struct {
	mu     sync.Mutex
	values map[string]int64
}

// add adds delta to the gauge name and returns its value, at least 0;
// publish, if not nil, is called with the value before the table is
// unlocked, so that two workers cannot set Envoy's gauge out of order.
// The gate bounds the names (contract.MaxIdentityGauges plus one), so the
// table is bounded too.
func (t *gaugeTable) add(name string, delta int64, publish func(int64)) int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	v := max(t.values[name]+delta, 0)
	t.values[name] = v
	if publish != nil {
		publish(v)
	}
	return v
}

// setGauge sets a labelled gauge through filter, a stream of the config
// that defined it.
func setGauge(filter C.uintptr_t, id statID, values []string, v int64) {
	bufs, pin := labelBuffers(values)
	defer pin.Unpin()
	C.dp_set_gauge(filter, C.size_t(id), first(bufs), C.size_t(len(bufs)), C.uint64_t(v))
}

// incrementCounter adds 1 to a labelled counter through filter.
func incrementCounter(filter C.uintptr_t, id statID, values []string) {
	bufs, pin := labelBuffers(values)
	defer pin.Unpin()
	C.dp_increment_labelled_counter(filter, C.size_t(id), first(bufs), C.size_t(len(bufs)), 1)
}
