package testkit

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FreePort returns a loopback TCP port that was free a moment ago and that
// no other FreePort caller, in this process or another, holds until the
// test ends.
//
// It picks below the kernel's ephemeral range: a port the kernel hands out
// (":0", or the source port of any outgoing connection, Envoy's and the
// back ends' included) can be taken by another process between this call
// and the bind that needs it, and with test packages running in parallel
// that happens. Below the range only another FreePort caller could take
// it, and a reservation file per port, created exclusively and removed at
// cleanup, rules that out too: without it, two callers (three ports for
// one etcd member, or two test binaries at once) could draw the same port
// between its check and its bind.
func FreePort(t T) int {
	t.Helper()
	dir := portReservations()
	lo, hi := reservablePorts()
	for range 256 {
		port := lo + rand.IntN(hi-lo+1)
		release, ok := reservePort(dir, port)
		if !ok {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			release()
			continue
		}
		l.Close()
		t.Cleanup(release)
		return port
	}
	t.Fatal("testkit: no free loopback port below the ephemeral range")
	return 0
}

// staleReservation is how old a reservation file must be to be taken over:
// longer than any test holds a port, so only a crashed run leaves one.
const staleReservation = 2 * time.Hour

// portReservations is the directory of reservation files shared by every
// test process of this user on the machine.
func portReservations() string {
	dir := filepath.Join(os.TempDir(), "directpipe-test-ports-"+strconv.Itoa(os.Getuid()))
	_ = os.MkdirAll(dir, 0o700)
	return dir
}

// reservePort creates port's reservation file, taking over a stale one.
// ok is false if someone else holds the port; when the directory cannot
// be used at all, the port is treated as unreserved rather than failing.
func reservePort(dir string, port int) (release func(), ok bool) {
	path := filepath.Join(dir, strconv.Itoa(port))
	for range 2 {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err == nil {
			f.Close()
			return func() { _ = os.Remove(path) }, true
		}
		if !errors.Is(err, fs.ErrExist) {
			return func() {}, true
		}
		info, err := os.Stat(path)
		if err != nil || time.Since(info.ModTime()) < staleReservation {
			return nil, false
		}
		_ = os.Remove(path)
	}
	return nil, false
}

// reservablePorts is the range FreePort picks from: up to 8,192 ports
// below the first ephemeral port (32768 on Linux unless configured).
func reservablePorts() (lo, hi int) {
	first := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > 2048 {
				first = n
			}
		}
	}
	hi = first - 1
	lo = max(1024, hi-8191)
	return lo, hi
}
