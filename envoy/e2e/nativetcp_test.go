package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
	"github.com/directpipe/directpipe/filter/contract"
	"github.com/directpipe/directpipe/filter/gate"
)

// nativeTCPListener is a tcp mode listener as the control plane writes
// one for a native node: the module's network filter, then tcp_proxy to
// the cluster "upstream". The filter config is one policy's JSON. As the
// control plane does, tcp_proxy connects only on data: in its default
// mode it stops reading the client until its upstream connects, which it
// is not asked to do before the filter decides.
const nativeTCPListener = `- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: native-tcp
  address: {socket_address: {address: 127.0.0.1, port_value: %[1]d}}
  filter_chains:
  - filters:
    - name: directpipe.handshake_tcp.native
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.dynamic_modules.v3.DynamicModuleNetworkFilter
        dynamic_module_config:
          name: directpipe_native
          do_not_close: true
          module: {local: {filename: %[2]q}}
        filter_name: directpipe.handshake_tcp.native
        filter_config:
          "@type": type.googleapis.com/google.protobuf.StringValue
          value: %[3]q
    - name: envoy.filters.network.tcp_proxy
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
        stat_prefix: native_tcp
        cluster: upstream
        upstream_connect_mode: ON_DOWNSTREAM_DATA
        max_early_data_bytes: 16384
`

// nativeTCPPolicy is the tcp listener's one policy: a bearer API key.
func nativeTCPPolicy(t *testing.T) string {
	t.Helper()
	sum := sha256.Sum256([]byte(nativeAPIKey))
	b, err := json.Marshal(&contract.Policy{
		Name: "native-tcp", Realm: "native", Sources: []contract.Source{{Bearer: true}}, MaxTokenBytes: 4096,
		APIKeys: []contract.APIKey{{SHA256: hex.EncodeToString(sum[:]), Identity: "native-client"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestNativeTCPNotEnteredPerFrame runs a tcp mode listener on the native
// network filter (the -tags nativeprobe build, which counts the read
// hook's calls in C and the network filter's entries into Go). A
// connection without a key gets the module's own raw 401, with its
// challenge, and is closed; one with the key reaches the upstream, and
// after that decision 500 chunks each way make Envoy call the read hook
// 500 times and enter Go not once. A connection whose head never ends is
// closed after tcpcheck.HeadTimeout, a panic in the module's Go code
// closes only the connection it was checking, and a flood of silent
// connections is shed oldest first while a real caller gets in.
func TestNativeTCPNotEnteredPerFrame(t *testing.T) {
	n, ctx := startProbeEnvoy(t)
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	port, _ := strconv.Atoi(tcpAddr[strings.LastIndex(tcpAddr, ":")+1:])
	writeAtomic(t, n.lds, []byte(fmt.Sprintf(nativeListener, n.port, 1, n.module, true, nativeFilterConfig(t))+
		fmt.Sprintf(nativeTCPListener, port, n.module, nativeTCPPolicy(t))))
	if err := testkit.WaitListening(tcpAddr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	calls := func() (reads, goEntries int) {
		t.Helper()
		resp, body := n.get(ctx, t, "/native/tcp-calls")
		if _, err := fmt.Sscanf(body, "%d %d", &reads, &goEntries); resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("GET /native/tcp-calls: status %d body %q", resp.StatusCode, body)
		}
		return reads, goEntries
	}
	head := func(extra string) string {
		return "GET /ws HTTP/1.1\r\nHost: native\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + extra + "\r\n"
	}
	dial := func() (net.Conn, *bufio.Reader) {
		t.Helper()
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if d, ok := ctx.Deadline(); ok {
			c.SetDeadline(d)
		}
		return c, bufio.NewReader(c)
	}

	// A head that never ends: closed after the head timeout, by the
	// connection's own scheduled event, with no other connection on its
	// worker to trigger it.
	slow, slowBR := dial()
	io.WriteString(slow, "GET /ws HTTP/1.1\r\nHost: native\r\n")

	// Denied: the module answers on the connection, then closes it.
	c, br := dial()
	io.WriteString(c, head(""))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a handshake without a key: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), contract.ReasonMissingToken) ||
		resp.Header.Get("Www-Authenticate") != `Bearer realm="native"` {
		t.Fatalf("without a key: %d %q %q, want the module's 401 %s", resp.StatusCode, resp.Header, body, contract.ReasonMissingToken)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after the 401 the connection is still open (%v)", err)
	}

	// Allowed: the upstream's 101, then the pipe.
	c, br = dial()
	io.WriteString(c, head("Authorization: Bearer "+nativeAPIKey+"\r\n"))
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("with the key: %v %v", resp, err)
	}
	readsBefore, goBefore := calls()
	if goBefore == 0 {
		t.Fatal("the probe counted no entry into Go for two connections: it counts nothing")
	}
	const frames = 500
	chunk := make([]byte, 160)
	for i := range frames {
		if _, err := c.Write(chunk); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if _, err := io.ReadFull(br, chunk); err != nil {
			t.Fatalf("frame %d echo: %v", i, err)
		}
	}
	readsAfter, goAfter := calls()
	t.Logf("%d chunks after the decision: %d read hook calls, %d entries into Go", frames, readsAfter-readsBefore, goAfter-goBefore)
	if readsAfter-readsBefore < frames {
		t.Errorf("%d read hook calls for %d chunks: the probe no longer sees Envoy's per-chunk calls", readsAfter-readsBefore, frames)
	}
	if goAfter != goBefore {
		t.Errorf("%d entries into Go on a decided connection's %d chunks, want 0", goAfter-goBefore, frames)
	}

	if b, err := slowBR.ReadByte(); err != io.EOF {
		t.Fatalf("a head that never ends: read %q, %v; want the connection closed after the head timeout", b, err)
	}
	slow.Close()

	// A panic in the module's Go code while it reads a head (the probe
	// build panics on /native/panic): that connection is closed
	// unanswered, Envoy and the decided connection go on, and new
	// handshakes are checked by a fresh gate.
	p, pbr := dial()
	io.WriteString(p, "GET /native/panic HTTP/1.1\r\nHost: native\r\n\r\n")
	if b, err := pbr.ReadByte(); err != io.EOF {
		t.Fatalf("the connection whose check panicked: read %q, %v; want it closed unanswered", b, err)
	}
	n.waitLog(ctx, t, "tcp gate starts over", 1)
	if _, err := c.Write(chunk); err != nil {
		t.Fatalf("the decided connection after the panic: %v", err)
	}
	if _, err := io.ReadFull(br, chunk); err != nil {
		t.Fatalf("the decided connection after the panic: %v", err)
	}
	for i := range 4 {
		c2, br2 := dial()
		io.WriteString(c2, head(""))
		if resp, err := http.ReadResponse(br2, nil); err != nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("handshake %d after the panic: %v %v, want the module's 401", i, resp, err)
		}
	}

	// A flood of silent connections: past gate.MaxPending undecided
	// handshakes on a worker the oldest are closed to make room, from
	// another connection's callback, and a caller who sends its handshake
	// at once still gets in.
	flood := make([]net.Conn, 0, 2*gate.MaxPending+100)
	defer func() {
		for _, fc := range flood {
			fc.Close()
		}
	}()
	for range cap(flood) {
		fc, err := (&net.Dialer{}).DialContext(ctx, "tcp", tcpAddr)
		if err != nil {
			t.Fatalf("flood: %v", err)
		}
		flood = append(flood, fc)
	}
	if err := n.WaitStat(ctx, "dynamicmodulescustom."+contract.MetricTCPShed, func(v int64) bool { return v > 0 }); err != nil {
		t.Fatalf("no undecided handshake was shed under a flood of %d: %v", len(flood), err)
	}
	c3, br3 := dial()
	io.WriteString(c3, head("Authorization: Bearer "+nativeAPIKey+"\r\n"))
	if resp, err := http.ReadResponse(br3, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("a handshake during the flood: %v %v", resp, err)
	}

	stats, err := n.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{
		contract.MetricTCPAllowed: 2, contract.MetricTCPDeniedPrefix + contract.ReasonMissingToken: 5, contract.MetricTCPHeadTimeout: 1,
	} {
		if v := stats["dynamicmodulescustom."+name]; v != want {
			t.Errorf("dynamicmodulescustom.%s = %d, want %d", name, v, want)
		}
	}
}
