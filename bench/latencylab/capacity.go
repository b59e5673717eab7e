//go:build linux

package latencylab

import (
	"fmt"
	"time"
)

// CapacityConfig sizes the capacity search.
type CapacityConfig struct {
	// Start is the first step's stream count; each step doubles it until
	// one fails or Max is reached.
	Start, Max int
	// Frames each stream sends per step, at the lab's interval.
	Frames int
	// Refine is how many bisection steps follow the first failure.
	Refine int
}

// CapacityP99 is the round trip a step's 99th percentile must stay under.
const CapacityP99 = 20 * time.Millisecond

// CapacityStep is one load level of one path.
type CapacityStep struct {
	Streams        int           `json:"streams"`
	P99            time.Duration `json:"p99_ns"`
	Sent           int           `json:"sent"`
	Received       int           `json:"received"`
	Lost           int           `json:"lost"`
	Disconnects    int           `json:"disconnects"`
	ProxyCPUPer10k float64       `json:"proxy_cpu_s_per_10k_frames"`
	Pass           bool          `json:"pass"`
}

// Capacity is the most concurrent real-time streams a path carries with
// p99 under CapacityP99 and no loss.
type Capacity struct {
	Path string `json:"path"`
	// Streams is the largest passing step, 0 if none passed.
	Streams int `json:"streams"`
	// AtMax says the search stopped at its ceiling, not at a failure.
	AtMax bool           `json:"at_max"`
	Steps []CapacityStep `json:"steps"`
}

// best is the passing step with the most streams.
func (c *Capacity) best() *CapacityStep {
	var out *CapacityStep
	for i := range c.Steps {
		if s := &c.Steps[i]; s.Pass && (out == nil || s.Streams > out.Streams) {
			out = s
		}
	}
	return out
}

// capacity steps the load on every WebSocket path.
func (l *lab) capacity(runners []pathRunner) []*Capacity {
	var out []*Capacity
	for _, r := range runners {
		if r.url == "" {
			continue
		}
		out = append(out, l.capacityOf(r))
	}
	return out
}

func (l *lab) capacityOf(r pathRunner) *Capacity {
	cc := l.cfg.Capacity
	c := &Capacity{Path: r.name}
	step := func(n int) bool {
		p := l.runSized(r, n, cc.Frames)
		s := CapacityStep{Streams: n, P99: p.RTT.P99, Sent: p.Sent, Received: p.Received, Lost: p.Lost,
			Disconnects: p.Disconnects, ProxyCPUPer10k: p.ProxyCPUPer10k}
		s.Pass = p.Available && p.Sent > 0 && p.Received == p.Sent && p.Lost == 0 && p.Disconnects == 0 && p.RTT.P99 < CapacityP99
		c.Steps = append(c.Steps, s)
		fmt.Fprintf(l.log, ">> capacity %s: %d streams, p99 %v, %d/%d received, pass %v\n", r.name, n, p.RTT.P99, p.Received, p.Sent, s.Pass)
		// Let sockets close and the proxy settle before the next level.
		time.Sleep(200 * time.Millisecond)
		return s.Pass
	}
	pass, fail := 0, 0
	for n := cc.Start; n > 0; n *= 2 {
		n = min(n, cc.Max)
		if !step(n) {
			fail = n
			break
		}
		pass = n
		if n == cc.Max {
			c.AtMax = true
			break
		}
	}
	// Bisect between the last pass and the first failure, to a tenth of
	// the gap's start.
	for range cc.Refine {
		if fail == 0 || fail-pass <= max(pass/10, 1) {
			break
		}
		mid := (pass + fail) / 2
		if step(mid) {
			pass = mid
		} else {
			fail = mid
		}
	}
	c.Streams = pass
	return c
}

// runSized runs a path once at a size other than the configured one.
func (l *lab) runSized(r pathRunner, streams, frames int) *Path {
	saved := l.cfg
	defer func() { l.cfg = saved }()
	l.cfg.Streams, l.cfg.Frames = streams, frames
	return r.run()
}
