// Package balance turns fleet-wide live-stream counts into EDS weights for
// least_streams back ends and into shed plans for a rebalance. It is pure:
// callers bring the counts and capacities, it brings the arithmetic.
package balance

import "math"

// MaxWeight bounds a weight well below Envoy's uint32 limit so a sum over a
// pool cannot overflow.
const MaxWeight = 1000

// Endpoint is one endpoint's live streams and capacity (0 means no stated
// capacity: the pool's largest stated capacity stands in, and with none
// stated the endpoints count as equal).
type Endpoint struct {
	Address    string
	Live       int
	MaxStreams int
}

// Weights gives each endpoint a weight proportional to its share of the
// next streams, were they placed to even the pool out: water-filling, in
// streams held per unit of capacity, of as many new streams as an endpoint
// holds on average (at least one). Envoy splits the new streams of each
// Envoy in these proportions until the next weights come, so the next
// batch fills the emptiest endpoints first without swinging the pool the
// other way when it is larger than the gap. An even pool gets equal
// weights (Envoy then picks by the streams it holds itself); an endpoint
// that would get nothing, or is full, keeps weight 1: Envoy refuses 0.
func Weights(eps []Endpoint) []uint32 { return WeightsFor(eps, 0) }

// WeightsFor is Weights for a known next batch: the streams a rebalance
// has asked to reconnect. 0 takes the average, as Weights does.
func WeightsFor(eps []Endpoint, batch int) []uint32 {
	out := make([]uint32, len(eps))
	if len(eps) == 0 {
		return out
	}
	stated, total := 0, 0
	for _, e := range eps {
		stated = max(stated, e.MaxStreams)
		total += e.Live
	}
	capacity := func(e Endpoint) float64 {
		switch {
		case e.MaxStreams > 0:
			return float64(e.MaxStreams)
		case stated > 0:
			return float64(stated)
		}
		return math.Inf(1) // no capacity stated: no ceiling
	}
	// The share of the next batch an endpoint gets at fill level u
	// (streams per unit of weight, capped at its capacity).
	unit := func(e Endpoint) float64 {
		if stated > 0 {
			return capacity(e)
		}
		return 1
	}
	share := func(e Endpoint, u float64) float64 {
		return max(0, min(u*unit(e), capacity(e))-float64(e.Live))
	}
	if batch <= 0 {
		batch = (total + len(eps) - 1) / len(eps)
	}
	next := float64(max(1, batch))
	// The level at which the batch fits: the shares grow with u, so a
	// bisection finds it; the bound is where every endpoint is at its
	// capacity or past the busiest count plus the batch.
	lo, hi := 0.0, 0.0
	for _, e := range eps {
		hi = max(hi, (float64(e.Live)+next)/unit(e))
	}
	for range 64 {
		mid := (lo + hi) / 2
		sum := 0.0
		for _, e := range eps {
			sum += share(e, mid)
		}
		if sum < next {
			lo = mid
		} else {
			hi = mid
		}
	}
	most := 0.0
	shares := make([]float64, len(eps))
	for i, e := range eps {
		shares[i] = share(e, hi)
		most = max(most, shares[i])
	}
	for i := range eps {
		w := uint32(1)
		if most > 0 {
			w = uint32(max(1, math.Round(shares[i]*MaxWeight/most)))
		}
		out[i] = w
	}
	return out
}

// Shed says how many streams each endpoint should end so the pool is even:
// every endpoint above its share of the pool's streams, rounded up, sheds
// the excess. The share is by capacity when any is stated (as in Weights),
// else the mean.
func Shed(eps []Endpoint) []int {
	if len(eps) == 0 {
		return nil
	}
	total, stated := 0, 0
	for _, e := range eps {
		total += e.Live
		stated = max(stated, e.MaxStreams)
	}
	capacity := func(e Endpoint) int {
		switch {
		case e.MaxStreams > 0:
			return e.MaxStreams
		case stated > 0:
			return stated
		}
		return 1
	}
	sum := 0
	for _, e := range eps {
		sum += capacity(e)
	}
	out := make([]int, len(eps))
	for i, e := range eps {
		target := (total*capacity(e) + sum - 1) / sum
		out[i] = max(0, e.Live-target)
	}
	return out
}
