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
		{"even", []Endpoint{{Live: 10, MaxStreams: 100}, {Live: 10, MaxStreams: 100}}, []uint32{900, 900}},
		{"new endpoint gets most", []Endpoint{{Live: 100, MaxStreams: 200}, {Live: 0, MaxStreams: 200}}, []uint32{500, 1000}},
		{"full keeps weight 1", []Endpoint{{Live: 50, MaxStreams: 50}, {Live: 0, MaxStreams: 50}}, []uint32{20, 1000}},
		{"no capacity stated", []Endpoint{{Live: 9}, {Live: 0}}, []uint32{111, 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Weights(tc.eps); !slices.Equal(got, tc.want) {
				t.Errorf("Weights = %v, want %v", got, tc.want)
			}
		})
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
