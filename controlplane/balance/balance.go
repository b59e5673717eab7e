// Package balance turns fleet-wide live-stream counts into EDS weights for
// least_streams back ends and into shed plans for a rebalance. It is pure:
// callers bring the counts and capacities, it brings the arithmetic.
package balance

// MaxWeight bounds a weight well below Envoy's uint32 limit so a sum over a
// pool cannot overflow.
const MaxWeight = 1000

// Endpoint is one endpoint's live streams and capacity (0 means no stated
// capacity; the pool's largest stated capacity, or the busiest count, stands in).
type Endpoint struct {
	Address    string
	Live       int
	MaxStreams int
}

// Weights gives each endpoint a weight proportional to its free capacity, so
// new streams go where fewest live streams are relative to what each can hold.
// A full endpoint keeps weight 1: Envoy refuses a weight of 0, and the local
// least-request pick still avoids it.
func Weights(eps []Endpoint) []uint32 {
	ceiling := 1
	for _, e := range eps {
		ceiling = max(ceiling, e.MaxStreams, e.Live)
	}
	out := make([]uint32, len(eps))
	for i, e := range eps {
		c := e.MaxStreams
		if c == 0 {
			c = ceiling
		}
		free := max(c-e.Live, 1)
		out[i] = uint32(max(1, free*MaxWeight/ceiling))
	}
	return out
}

// Shed says how many streams each endpoint should end so the pool is even:
// every endpoint above the rounded-up mean sheds the excess.
func Shed(eps []Endpoint) []int {
	if len(eps) == 0 {
		return nil
	}
	total := 0
	for _, e := range eps {
		total += e.Live
	}
	target := (total + len(eps) - 1) / len(eps)
	out := make([]int, len(eps))
	for i, e := range eps {
		out[i] = max(0, e.Live-target)
	}
	return out
}
