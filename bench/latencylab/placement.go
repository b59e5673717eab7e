//go:build linux

package latencylab

import (
	"fmt"
	"os"
)

// Placement says which cores the probe, the back end and the proxies run
// on. On a small machine where every hop is a loopback wake-up, where each
// process runs moves round trips by an order of magnitude, so the lab pins
// them and the results say how.
type Placement struct {
	Name string `json:"name"`
	// Probe is the lab's own process: the probe and the control plane.
	Probe   []int `json:"probe_cpus,omitempty"`
	Backend []int `json:"backend_cpus,omitempty"`
	// Proxy holds every proxy: both Envoys, nginx and HAProxy.
	Proxy []int `json:"proxy_cpus,omitempty"`
}

// Placements are the layouts the lab knows, by name.
var placementNames = []string{"split", "shared", "one"}

// NewPlacement returns the layout called name on a machine of ncpu cores:
//   - split: the probe and the back end share core 0, the proxy has the
//     others, as a proxy between two other hosts would;
//   - one: everything on core 0;
//   - shared: nothing pinned, the scheduler decides.
//
// A one-core machine can only share.
func NewPlacement(name string, ncpu int) (Placement, error) {
	all := make([]int, ncpu)
	for i := range all {
		all[i] = i
	}
	switch {
	case name == "shared" || ncpu < 2 && name == "split":
		return Placement{Name: "shared"}, nil
	case name == "split":
		return Placement{Name: name, Probe: []int{0}, Backend: []int{0}, Proxy: all[1:]}, nil
	case name == "one":
		return Placement{Name: name, Probe: []int{0}, Backend: []int{0}, Proxy: []int{0}}, nil
	}
	return Placement{}, fmt.Errorf("placement %q: want one of %v", name, placementNames)
}

func (p Placement) String() string {
	if len(p.Proxy) == 0 {
		return "nothing pinned (" + p.Name + ")"
	}
	return fmt.Sprintf("probe and control plane on CPU %s, back end on CPU %s, every proxy on CPU %s (%s)",
		cpuList(p.Probe), cpuList(p.Backend), cpuList(p.Proxy), p.Name)
}

// pinSelf pins the lab's own process: the probe's goroutines run on
// threads that exist now or are started by them, and inherit the set.
func (p Placement) pinSelf() error { return pin(os.Getpid(), p.Probe) }

// pinAll applies the placement to every process the lab started. The peers
// were started pinned (their forks inherit it); Envoy's threads all exist
// once it is ready.
func (l *lab) pinAll() error {
	p := l.placement
	if len(p.Proxy) == 0 {
		return nil
	}
	if err := p.pinSelf(); err != nil {
		return err
	}
	if err := pin(l.backend.PID, p.Backend); err != nil {
		return err
	}
	envoys := []procs{onEnvoy(l.stack.envoy), onEnvoy(l.static)}
	if l.native != nil {
		envoys = append(envoys, onEnvoy(l.native.envoy))
	}
	for _, e := range envoys {
		if err := pinAll(e, p.Proxy); err != nil {
			return err
		}
	}
	return nil
}
