package testkit

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestFreePortNeverHandsOutAHeldPort(t *testing.T) {
	seen := map[int]bool{}
	dir := portReservations()
	t.Run("hold", func(t *testing.T) {
		for range 500 {
			p := FreePort(t)
			if seen[p] {
				t.Fatalf("port %d handed out twice while held", p)
			}
			seen[p] = true
		}
		for p := range seen {
			if _, err := os.Stat(filepath.Join(dir, strconv.Itoa(p))); err != nil {
				t.Fatalf("port %d held without a reservation: %v", p, err)
			}
		}
	})
	for p := range seen {
		if _, err := os.Stat(filepath.Join(dir, strconv.Itoa(p))); err == nil {
			t.Fatalf("port %d still reserved after its test ended", p)
		}
	}
}

func TestReservePortTakesOverOnlyStaleFiles(t *testing.T) {
	dir := t.TempDir()
	release, ok := reservePort(dir, 4242)
	if !ok {
		t.Fatal("first reservation refused")
	}
	if _, ok := reservePort(dir, 4242); ok {
		t.Fatal("a held port was reserved again")
	}
	old := time.Now().Add(-staleReservation - time.Minute)
	if err := os.Chtimes(filepath.Join(dir, "4242"), old, old); err != nil {
		t.Fatal(err)
	}
	if _, ok := reservePort(dir, 4242); !ok {
		t.Fatal("a stale reservation was not taken over")
	}
	release()
	if _, err := os.Stat(filepath.Join(dir, "4242")); err == nil {
		t.Fatal("release left the file")
	}
}
