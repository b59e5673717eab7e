package e2e

import (
	"context"
	"maps"
	"os"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/xds"
	"github.com/directpipe/directpipe/envoy/testkit"
)

func TestZZCPU(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	ca, _ := certs.LoadAuthority(certs.Files{Dir: dir}.CA())
	limits := xds.DefaultLimits
	limits.StreamsPerSecond, limits.StreamBurst = 100000, 100000
	cp := fleetCP(t, dir, &limits)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f, err := testkit.StartSimFleet(ctx, testkit.SimFleetOptions{Prefix: "sim", Nodes: 1000, Addrs: []string{cp.XDSAddr()}, CA: ca, Subs: testkit.Wildcard()})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	out, _ := os.Create("/tmp/fleet-cpu.prof")
	pprof.StartCPUProfile(out)
	orig, _ := os.ReadFile(cp.PolicyFile)
	for i := range 10 {
		b := string(orig)
		if i%2 == 0 {
			b = strings.Replace(b, "routes:\n", "routes:\n  - { name: zz, match: { prefix: /zz/ }, kind: http, backend: rest }\n", 1)
		}
		before := cp.XDS().Versions()
		start := time.Now()
		os.WriteFile(cp.PolicyFile+".tmp", []byte(b), 0o644)
		os.Rename(cp.PolicyFile+".tmp", cp.PolicyFile)
		var latest map[string]string
		waitFor(t, time.Minute, func() (bool, string) {
			latest = cp.XDS().Versions()
			return !maps.Equal(before, latest), "not served"
		})
		acks, err := f.WaitAcked(ctx, latest, start)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("change %d: served after ?, p50 %v max %v", i, acks[len(acks)/2], acks[len(acks)-1])
	}
	pprof.StopCPUProfile()
	out.Close()
}
