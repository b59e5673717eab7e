package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestPreStopHookCutsNoCall runs the Helm chart's preStop hook, the script
// itself, against a real Envoy holding live calls on its HTTP listener and
// on a tcp-mode listener, as the kubelet runs it before it stops a pod:
// readiness fails at once, the listeners drain and then refuse new
// connections, the live calls go on with no frame lost, and the hook
// returns when the calls have ended, or at its deadline while they still
// run.
func TestPreStopHookCutsNoCall(t *testing.T) {
	script := chartFile(t, "files/prestop.sh")
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	readyAddr := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	s := newStackWith(t, stackOptions{readyAddr: readyAddr}, func(p *policyParams) { p.TCP = tcpAddr })
	if err := testkit.WaitListening(tcpAddr, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, code, err := httpGet(ctx, "http://"+readyAddr+"/ready"); code != http.StatusOK {
		t.Fatalf("readiness listener before the hook: %d, %v", code, err)
	}

	const perListener = 2
	st := startStreams(t, validToken(t), perListener, s.listenURL("ws", "/v1/voice"), "ws://"+tcpAddr+"/v1/voice")
	s.waitUpstreams(t, 2*perListener)
	live := fmt.Sprintf("%d live streams", 2*perListener)

	// The deadline case first, while the calls run: the hook gives up, says
	// how many calls its exit leaves to be cut, and cuts none itself.
	out, code := runHook(ctx, t, script, s.envoy, 1)
	if code != 3 || !strings.Contains(out, "deadline of 1s reached with "+live) {
		t.Fatalf("hook with the calls live and a 1 s deadline: exit %d, want 3 naming %q:\n%s", code, live, out)
	}

	// Readiness failed at once, on the admin API and on the listener a
	// kubelet probes.
	if b, code, _ := httpGet(ctx, s.envoy.AdminURL()+"/ready"); code != http.StatusServiceUnavailable || strings.TrimSpace(b) != "DRAINING" {
		t.Errorf("admin /ready after the hook: %d %q, want 503 DRAINING", code, b)
	}
	if _, code, err := httpGet(ctx, "http://"+readyAddr+"/ready"); code == http.StatusOK {
		t.Errorf("readiness listener after the hook: %d, %v; want a failure", code, err)
	}

	// After Envoy's drain time the listeners are closed: a new call is
	// refused on both, never routed.
	for _, addr := range []string{s.params.Listen, tcpAddr} {
		waitFor(t, time.Minute, func() (bool, string) {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err == nil {
				c.Close()
				return false, addr + " still accepts connections"
			}
			return errors.Is(err, syscall.ECONNREFUSED), fmt.Sprintf("dial %s: %v", addr, err)
		})
	}

	// The calls still flow both ways after the listeners closed.
	rx := func() int64 {
		return s.stat(t, "cluster.voice.upstream_cx_rx_bytes_total")
	}
	before := rx()
	waitFor(t, 30*time.Second, func() (bool, string) {
		now := rx()
		return now > before, fmt.Sprintf("voice back end bytes stuck at %d", now)
	})

	// The hook as the kubelet runs it, with a long deadline: it waits for
	// the calls, and returns once they have ended.
	hook := startHook(t, script, s.envoy, 300)
	waitFor(t, 30*time.Second, func() (bool, string) {
		o := hook.out.String()
		return strings.Count(o, "prestop: "+live) >= 2, "hook output so far: " + o
	})
	select {
	case <-hook.done:
		t.Fatalf("the hook returned while the calls were live:\n%s", hook.out.String())
	default:
	}
	st.end(t) // every frame came back, no call was cut
	select {
	case err := <-hook.done:
		if err != nil || !strings.Contains(hook.out.String(), "prestop: no live streams") {
			t.Fatalf("hook after the calls ended: %v\n%s", err, hook.out.String())
		}
	case <-ctx.Done():
		t.Fatalf("the hook did not return after the calls ended:\n%s", hook.out.String())
	}
	t.Logf("hook output:\n%s", hook.out.String())
}

// chartFile is a file of the Helm chart, by its path in the chart.
func chartFile(t *testing.T, rel string) string {
	t.Helper()
	root, err := testkit.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "deploy", "helm", "directpipe", rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	return p
}

func hookCmd(ctx context.Context, script string, e *testkit.Envoy, deadline int) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "sh", script)
	cmd.Env = append(os.Environ(),
		"ENVOY_ADMIN="+e.AdminURL(),
		fmt.Sprintf("DRAIN_DEADLINE_SECONDS=%d", deadline),
		"DRAIN_POLL_SECONDS=0.2")
	return cmd
}

// runHook runs the hook to its end and returns its output and exit code.
func runHook(ctx context.Context, t *testing.T, script string, e *testkit.Envoy, deadline int) (string, int) {
	t.Helper()
	out, err := hookCmd(ctx, script, e, deadline).CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		t.Fatalf("running the hook: %v\n%s", err, out)
		return "", 0
	}
}

type runningHook struct {
	out  *syncBuffer
	done chan error
}

// startHook runs the hook in the background; it is killed at the end of
// the test if it is still running.
func startHook(t *testing.T, script string, e *testkit.Envoy, deadline int) *runningHook {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h := &runningHook{out: &syncBuffer{}, done: make(chan error, 1)}
	cmd := hookCmd(ctx, script, e, deadline)
	cmd.Stdout, cmd.Stderr = h.out, h.out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { h.done <- cmd.Wait() }()
	t.Cleanup(cancel)
	return h
}

// httpGet returns a GET's body and status.
func httpGet(ctx context.Context, url string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), resp.StatusCode, err
}
