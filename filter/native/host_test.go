//go:build cgo

package main

import (
	"sync"
	"testing"
)

// TestSharedDataCompareAndSwap holds the module's shared data to what the
// gate expects of Proxy-Wasm's: an absent entry reads empty, a write with
// a stale token fails, token 0 writes anyway, and concurrent
// read-modify-write loops lose no update, the entry's creation included.
func TestSharedDataCompareAndSwap(t *testing.T) {
	s := &sharedData{entries: map[string]sharedEntry{}}
	v, absent, err := s.get("k")
	if err != nil || len(v) != 0 {
		t.Fatalf("absent entry: %q %v", v, err)
	}
	if !s.set("k", []byte("1"), absent) {
		t.Fatal("creating an absent entry with its token failed")
	}
	if s.set("k", []byte("1"), absent) {
		t.Fatal("a second creation with the absent token succeeded")
	}
	_, first, _ := s.get("k")
	if !s.set("k", []byte("2"), first) {
		t.Fatal("a write with the current token failed")
	}
	if s.set("k", []byte("3"), first) {
		t.Fatal("a write with a stale token succeeded")
	}
	if v, _, _ := s.get("k"); string(v) != "2" {
		t.Fatalf("value %q, want 2", v)
	}
	if !s.set("k", []byte("4"), 0) {
		t.Fatal("a write with token 0 failed")
	}

	const workers, each = 4, 500
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range each {
				for {
					v, cas, _ := s.get("n")
					if s.set("n", append(v, 'x'), cas) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	if v, _, _ := s.get("n"); len(v) != workers*each {
		t.Fatalf("%d updates counted, want %d", len(v), workers*each)
	}
}
