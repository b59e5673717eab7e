package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// flatRoute is the smallest route a generated policy has, one line each.
func flatRoute(i int) string {
	return fmt.Sprintf("  - { name: r%d, match: { prefix: /r/%d/ }, kind: http, backend: voice }\n", i, i)
}

// sizeRefusal is what every refusal of an oversized document names: the
// bound in bytes.
var sizeRefusal = fmt.Sprintf("more than the %d bytes (4 MiB) a policy may have", MaxPolicyBytes)

// TestPolicySizeBound: a document over MaxPolicyBytes is refused on every
// way in, before it is parsed, with an error naming the bound; one at the
// bound is read; and lists over their bounds are refused straight from
// the YAML tree, with their line.
func TestPolicySizeBound(t *testing.T) {
	dir := t.TempDir()
	// Comments pad a valid policy to exactly n bytes.
	padded := func(n int) []byte {
		doc := []byte(validPolicy + "#")
		return append(doc, []byte(strings.Repeat("x", n-len(doc)-1)+"\n")...)
	}
	file := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	atBound, overBound := padded(MaxPolicyBytes), padded(MaxPolicyBytes+1)

	t.Run("a file at the bound loads", func(t *testing.T) {
		if _, err := LoadFile(file("at.yaml", atBound)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a file over the bound is refused with its size", func(t *testing.T) {
		_, err := LoadFile(file("over.yaml", overBound))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("is %d bytes, %s", MaxPolicyBytes+1, sizeRefusal)) {
			t.Fatalf("%v, want a refusal naming the size and the bound", err)
		}
	})
	t.Run("text over the bound is refused before it is parsed", func(t *testing.T) {
		// Not YAML at all: a parse would say so instead.
		_, err := Decode([]byte("[" + strings.Repeat("x", MaxPolicyBytes)))
		if err == nil || !strings.Contains(err.Error(), sizeRefusal) {
			t.Fatalf("%v, want the size refusal", err)
		}
	})
	t.Run("the control plane never writes a file it could not read back", func(t *testing.T) {
		p, err := Parse([]byte(validPolicy))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := WriteSource(filepath.Join(dir, "source.yaml"), overBound, p); err == nil || !strings.Contains(err.Error(), sizeRefusal) {
			t.Errorf("WriteSource: %v, want the size refusal", err)
		}
		big := &policyv1.Policy{Listeners: p.GetListeners(), Backends: p.GetBackends()}
		for i := range MaxPolicyBytes / 40 {
			big.Routes = append(big.Routes, &policyv1.Route{Name: fmt.Sprintf("route-%d", i), Kind: "http", Backend: "voice"})
		}
		if _, err := WriteFile(filepath.Join(dir, "marshalled.yaml"), big); err == nil || !strings.Contains(err.Error(), sizeRefusal) {
			t.Errorf("WriteFile: %v, want the size refusal", err)
		}
	})
	t.Run("lists over their bounds are refused from the YAML tree", func(t *testing.T) {
		_, err := Decode([]byte(withRoutes(MaxRoutes, flatRoute)))
		if err == nil || !strings.Contains(err.Error(), "routes: 10001 entries, more than the 10000 allowed (line 5)") {
			t.Fatalf("%v, want the route bound with its line", err)
		}
		many := "listeners:\n" + strings.Repeat("  - { name: l, address: 127.0.0.1:1 }\n", MaxListeners+1)
		if _, err := Decode([]byte(many)); err == nil || !strings.Contains(err.Error(), "listeners: 65 entries, more than the 64 allowed (line 1)") {
			t.Fatalf("%v, want the listener bound", err)
		}
	})
}

// TestLargePolicyHeap prints the peak heap of reading large policies (a
// measure, not asserted on: it depends on the garbage collector's pace).
// Before the byte bound, refusing 100,000 routes (7.9 MB of YAML) parsed
// them all first and peaked at about 400 MiB of heap.
func TestLargePolicyHeap(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		doc  string
	}{
		{"100,000 routes (refused: too many bytes)", withRoutes(100_000, flatRoute)},
		{"the most routes under the byte bound (refused: too many routes)", withRoutes((MaxPolicyBytes-len(validPolicy))/len(flatRoute(99_999)), flatRoute)},
		{"10,000 routes (the route bound, applied)", withRoutes(MaxRoutes-1, flatRoute)},
	}
	for _, c := range cases {
		path := filepath.Join(dir, "policy.yaml")
		if err := os.WriteFile(path, []byte(c.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		var err error
		peak := peakHeap(func() { _, err = LoadFile(path) })
		t.Logf("%s, %d bytes: peak heap %d MiB; %.200v", c.name, len(c.doc), peak>>20, err)
	}
}

// peakHeap runs f and returns the most heap its objects took while it
// ran, sampled, over what was live before.
func peakHeap(f func()) uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	base, peak := sample[0].Value.Uint64(), uint64(0)
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(100 * time.Microsecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			peak = max(peak, sample[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(done)
	<-stopped
	return max(peak, base) - base
}
