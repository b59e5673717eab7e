package balance

import (
	"slices"
	"testing"
)

func TestWeights(t *testing.T) {
	for _, tc := range []struct {
		name string
		eps  []Endpoint
		want []uint32
	}{
		{"empty pool", nil, []uint32{}},
		{"idle", []Endpoint{{}, {}, {}}, []uint32{1000, 1000, 1000}},
		{"even", []Endpoint{{Live: 10, MaxStreams: 100}, {Live: 10, MaxStreams: 100}}, []uint32{1000, 1000}},
		// A new endpoint in a loaded pool: the next batch (as many as an
		// endpoint holds on average) goes to it alone.
		{"new endpoint gets all", []Endpoint{{Live: 100}, {Live: 100}, {Live: 100}, {Live: 0}}, []uint32{1, 1, 1, 1000}},
		// Slightly uneven: the next batch evens it out, without swinging
		// the emptiest endpoint to the top.
		{"small gaps, mild weights", []Endpoint{{Live: 36}, {Live: 33}, {Live: 31}}, []uint32{634, 854, 1000}},
		{"full keeps weight 1", []Endpoint{{Live: 50, MaxStreams: 50}, {Live: 0, MaxStreams: 50}}, []uint32{1, 1000}},
		// By utilisation: the endpoint twice as big takes twice the streams.
		{"capacities", []Endpoint{{Live: 0, MaxStreams: 100}, {Live: 0, MaxStreams: 200}}, []uint32{500, 1000}},
		{"unstated capacity takes the largest", []Endpoint{{Live: 10, MaxStreams: 100}, {Live: 10}}, []uint32{1000, 1000}},
		{"all full", []Endpoint{{Live: 5, MaxStreams: 5}, {Live: 9, MaxStreams: 5}}, []uint32{1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Weights(tc.eps); !slices.Equal(got, tc.want) {
				t.Errorf("Weights = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWeightsFor: during a rebalance the batch is the streams asked to
// reconnect: a few, all for the endpoint that is short of them, where the
// average would have spread them.
func TestWeightsFor(t *testing.T) {
	eps := []Endpoint{{Live: 92}, {Live: 93}, {Live: 92}, {Live: 62}}
	if got, want := WeightsFor(eps, 20), []uint32{1, 1, 1, 1000}; !slices.Equal(got, want) {
		t.Errorf("WeightsFor(20) = %v, want %v", got, want)
	}
	if got := WeightsFor(eps, 0); got[0] < 100 {
		t.Errorf("WeightsFor(0) = %v: the average batch should spread over the pool", got)
	}
}

// TestShedByCapacity: an endpoint twice as big holds twice the streams
// once even.
func TestShedByCapacity(t *testing.T) {
	eps := []Endpoint{{Live: 100, MaxStreams: 100}, {Live: 100, MaxStreams: 200}, {Live: 0, MaxStreams: 100}}
	if got, want := Shed(eps), []int{50, 0, 0}; !slices.Equal(got, want) {
		t.Errorf("Shed = %v, want %v", got, want)
	}
}

func TestShed(t *testing.T) {
	for _, tc := range []struct {
		name string
		live []int
		want []int
	}{
		{"empty", nil, nil},
		{"scale out 3 to 4", []int{100, 100, 100, 0}, []int{25, 25, 25, 0}},
		{"uneven rounds up", []int{10, 0, 0}, []int{6, 0, 0}},
		{"even sheds nothing", []int{5, 5}, []int{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eps := make([]Endpoint, len(tc.live))
			for i, l := range tc.live {
				eps[i].Live = l
			}
			if got := Shed(eps); !slices.Equal(got, tc.want) {
				t.Errorf("Shed = %v, want %v", got, tc.want)
			}
		})
	}
}
