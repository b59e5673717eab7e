package voiceprobe

import (
	"math"
	"slices"
	"time"
)

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value such that at least p% of the
// samples are no larger. It returns 0 for no samples.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// Sequence counts what happened to one stream's numbered frames on the way
// back: a frame is reordered when it arrives after a later-numbered one, a
// duplicate when its number was already seen, lost when it never arrives.
type Sequence struct {
	seen      map[uint64]bool
	maxSeen   uint64
	any       bool
	Received  int
	Reordered int
	Duplicate int
}

// Observe records the arrival of frame seq.
func (s *Sequence) Observe(seq uint64) {
	if s.seen == nil {
		s.seen = map[uint64]bool{}
	}
	if s.seen[seq] {
		s.Duplicate++
		return
	}
	s.seen[seq] = true
	s.Received++
	if s.any && seq < s.maxSeen {
		s.Reordered++
	}
	if !s.any || seq > s.maxSeen {
		s.maxSeen, s.any = seq, true
	}
}

// Lost is the number of frames among the first sent that never arrived.
func (s *Sequence) Lost(sent int) int {
	lost := 0
	for i := range sent {
		if !s.seen[uint64(i)] {
			lost++
		}
	}
	return lost
}

// Summary condenses samples into the numbers a report shows.
type Summary struct {
	Count int           `json:"count"`
	Min   time.Duration `json:"min_ns"`
	P50   time.Duration `json:"p50_ns"`
	P90   time.Duration `json:"p90_ns"`
	P99   time.Duration `json:"p99_ns"`
	P999  time.Duration `json:"p999_ns"`
	Max   time.Duration `json:"max_ns"`
	Mean  time.Duration `json:"mean_ns"`
}

// Summarize sorts samples in place and summarises them.
func Summarize(samples []time.Duration) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	slices.Sort(samples)
	var total time.Duration
	for _, d := range samples {
		total += d
	}
	return Summary{
		Count: len(samples),
		Min:   samples[0],
		P50:   Percentile(samples, 50),
		P90:   Percentile(samples, 90),
		P99:   Percentile(samples, 99),
		P999:  Percentile(samples, 99.9),
		Max:   samples[len(samples)-1],
		Mean:  total / time.Duration(len(samples)),
	}
}
