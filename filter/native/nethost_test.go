//go:build cgo

package main

import (
	"bytes"
	"testing"
)

// TestCopyRange reads a range of a buffer lent in slices, as Envoy lends
// a connection's read buffer: across slice boundaries, past the end, and
// bounded by max.
func TestCopyRange(t *testing.T) {
	chunks := [][]byte{[]byte("GET /"), {}, []byte("v1 HT"), []byte("TP/1.1")}
	tests := []struct {
		name       string
		start, max int
		want       string
	}{
		{"all", 0, 100, "GET /v1 HTTP/1.1"},
		{"within the first slice", 1, 3, "ET "},
		{"across slices", 3, 6, " /v1 H"},
		{"from a later slice", 7, 4, " HTT"},
		{"at the end", 16, 10, ""},
		{"past the end", 40, 10, ""},
		{"nothing asked", 0, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := copyRange(chunks, tt.start, tt.max); !bytes.Equal(got, []byte(tt.want)) {
				t.Errorf("copyRange(%d, %d) = %q, want %q", tt.start, tt.max, got, tt.want)
			}
		})
	}
}
