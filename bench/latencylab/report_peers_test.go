//go:build linux

package latencylab

import (
	"testing"
	"time"
)

func TestStreamsPerCore(t *testing.T) {
	for _, tc := range []struct {
		cpuPer10k float64
		interval  time.Duration
		want      int
	}{
		{0.64, 20 * time.Millisecond, 312}, // 64 µs a frame, 50 frames a second
		{0.5, 10 * time.Millisecond, 200},
		{0, 20 * time.Millisecond, 0},
		{0.5, 0, 0},
	} {
		if got := streamsPerCore(tc.cpuPer10k, tc.interval); got != tc.want {
			t.Errorf("streamsPerCore(%v, %v) = %d, want %d", tc.cpuPer10k, tc.interval, got, tc.want)
		}
	}
}
