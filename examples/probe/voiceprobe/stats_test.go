package voiceprobe

import (
	"testing"
	"time"
)

func ms(v ...int) []time.Duration {
	out := make([]time.Duration, len(v))
	for i, x := range v {
		out[i] = time.Duration(x) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"single", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"median of even is the lower", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 is the max", hundred, 99.9, 100 * time.Millisecond},
		{"p100", hundred, 100, 100 * time.Millisecond},
		{"tiny p is the min", hundred, 0.001, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSequence(t *testing.T) {
	tests := []struct {
		name                           string
		arrivals                       []uint64
		sent                           int
		reordered, duplicate, lost, rx int
	}{
		{"in order", []uint64{0, 1, 2, 3}, 4, 0, 0, 0, 4},
		{"one swap", []uint64{0, 2, 1, 3}, 4, 1, 0, 0, 4},
		{"late frame counts once", []uint64{1, 2, 3, 0}, 4, 1, 0, 0, 4},
		{"loss", []uint64{0, 1, 3}, 4, 0, 0, 1, 3},
		{"tail loss", []uint64{0, 1}, 4, 0, 0, 2, 2},
		{"duplicate", []uint64{0, 1, 1, 2}, 3, 0, 1, 0, 3},
		{"reversed", []uint64{3, 2, 1, 0}, 4, 3, 0, 0, 4},
		{"nothing", nil, 5, 0, 0, 5, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Sequence
			for _, seq := range tt.arrivals {
				s.Observe(seq)
			}
			if s.Reordered != tt.reordered || s.Duplicate != tt.duplicate || s.Lost(tt.sent) != tt.lost || s.Received != tt.rx {
				t.Errorf("reordered %d duplicate %d lost %d received %d; want %d %d %d %d",
					s.Reordered, s.Duplicate, s.Lost(tt.sent), s.Received, tt.reordered, tt.duplicate, tt.lost, tt.rx)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize(ms(5, 1, 3, 2, 4))
	if s.Count != 5 || s.Min != time.Millisecond || s.Max != 5*time.Millisecond || s.P50 != 3*time.Millisecond || s.Mean != 3*time.Millisecond {
		t.Errorf("Summarize = %+v", s)
	}
	if (Summarize(nil) != Summary{}) {
		t.Error("Summarize(nil) is not zero")
	}
}
