//go:build linux

package main

import (
	"bytes"
	"regexp"
	"testing"
	"time"
)

// TestProgress: every line gets the elapsed time once, however the lines
// are split across writes.
func TestProgress(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		lines  int
	}{
		{"one line", []string{">> path direct, round 1/2\n"}, 1},
		{"two in one write", []string{"a\nb\n"}, 2},
		{"split line", []string{">> path ", "direct\n"}, 1},
		{"no newline yet", []string{"a"}, 1},
	}
	prefix := regexp.MustCompile(`(?m)^\[ *[0-9hms.]+\] `)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := &progress{w: &buf, start: time.Now()}
			for _, w := range tt.writes {
				if n, err := p.Write([]byte(w)); err != nil || n != len(w) {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := len(prefix.FindAllString(buf.String(), -1)); got != tt.lines {
				t.Errorf("%q: %d prefixes, want %d", buf.String(), got, tt.lines)
			}
		})
	}
}

// TestShape: the default run is the quick one; -full (or -tiny, or
// -memory) keeps the lab's own sizes, and flags given win.
func TestShape(t *testing.T) {
	tests := []struct {
		name     string
		quick    bool
		set      map[string]bool
		sections string
		rounds   int
		want     string
		wantR    int
	}{
		{"default", true, nil, "", 3, "paths,handshakes,fleet", QuickRounds},
		{"full", false, nil, "", 3, "", 3},
		{"sections given", true, map[string]bool{"sections": true}, "push", 3, "push", QuickRounds},
		{"rounds given", true, map[string]bool{"rounds": true}, "", 5, "paths,handshakes,fleet", 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, r := shape(tt.quick, tt.set, tt.sections, tt.rounds)
			if s != tt.want || r != tt.wantR {
				t.Errorf("shape = %q, %d; want %q, %d", s, r, tt.want, tt.wantR)
			}
		})
	}
}
