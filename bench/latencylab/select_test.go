//go:build linux

package latencylab

import (
	"slices"
	"testing"
)

func TestParseSelection(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		sections, paths, tunings string
		want                     Selection
		wantErr                  bool
	}{
		{name: "everything"},
		{name: "lists", sections: "paths, tunings", paths: "direct,haproxy", tunings: "io_uring",
			want: Selection{Sections: []string{"paths", "tunings"}, Paths: []string{"direct", "haproxy"}, Tunings: []string{"io_uring"}}},
		{name: "unknown section", sections: "paths,speed", wantErr: true},
		{name: "unknown path", paths: "envoy", wantErr: true},
		{name: "unknown tuning", tunings: "turbo", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseSelection(tc.sections, tc.paths, tc.tunings)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if !slices.Equal(got.Sections, tc.want.Sections) || !slices.Equal(got.Paths, tc.want.Paths) || !slices.Equal(got.Tunings, tc.want.Tunings) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestSelectionKeepsBaseline(t *testing.T) {
	s := Selection{Tunings: []string{"io_uring"}}
	if !s.tuning("baseline") || !s.tuning("io_uring") || s.tuning("no stats") {
		t.Errorf("selection %+v: baseline and io_uring only", s)
	}
	if !(Selection{}).section("storm") || !(Selection{}).path("nginx") {
		t.Error("the zero selection must select everything")
	}
}
