package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/gate"
	"github.com/directpipe/directpipe/filter/tcpcheck"
)

// TestVMFailureLeavesNoQuotaBehind: an identity at its stream quota when
// the Wasm VM fails, whose streams then end, may open streams again once
// the VM is reloaded: a failed VM never gives its streams back itself
// (Envoy calls nothing in it), so the counts it held must not outlive it.
func TestVMFailureLeavesNoQuotaBehind(t *testing.T) {
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	quotaTCP := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{wasm: testkit.Binary(t, "handshake-faultinject.wasm")}, func(p *policyParams) {
		p.TCP = tcpAddr
		p.RoutesYAML = fmt.Sprintf(quotaRoutes, quotaTCP)
		p.AuthPoliciesYAML = fmt.Sprintf(quotaPolicies, 2, 3)
	})
	for _, addr := range []string{tcpAddr, quotaTCP} {
		if err := testkit.WaitListening(addr, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	s.waitStatus("SYNCED", "")
	direct := s.params.Listen

	var alice []held
	for i := range 2 {
		h := hold(t, t, direct, "/v1/quota", "alice")
		if h.status != http.StatusSwitchingProtocols {
			t.Fatalf("alice's stream %d: %d %s", i, h.status, h.body)
		}
		alice = append(alice, h)
	}
	refusedFor(t, hold(t, t, direct, "/v1/quota", "alice"), contract.ReasonStreamQuota)

	dialMany(t, tcpAddr, 2000, "")
	waitFor(t, tcpcheck.HeadTimeout+30*time.Second, func() (bool, string) {
		return s.envoyLogHas(t, vmTrap), "the flood did not fail the VM"
	})
	for _, h := range alice {
		h.close()
	}
	ended := time.Now()
	// The reloaded VM serves: bob, who held nothing, gets in.
	var bob held
	waitFor(t, 15*time.Second, func() (bool, string) {
		bob = hold(t, t, direct, "/v1/quota", "bob")
		return bob.status == http.StatusSwitchingProtocols, fmt.Sprintf("bob after the failure: %d %s", bob.status, bob.body)
	})
	bob.close()
	// Alice's streams have ended: she may open streams again once the
	// failed VM's counts have expired (a bound, not a measure of speed).
	waitFor(t, gate.AliveTimeout+30*time.Second, func() (bool, string) {
		h := hold(t, t, direct, "/v1/quota", "alice")
		h.close()
		if h.status == http.StatusSwitchingProtocols {
			t.Logf("alice admitted again %v after her streams ended", time.Since(ended).Round(time.Second))
		}
		return h.status == http.StatusSwitchingProtocols, fmt.Sprintf("alice after her streams ended with the failed VM: %d %s", h.status, h.body)
	})
}
