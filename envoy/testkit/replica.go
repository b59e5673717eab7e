package testkit

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// ReplicaOptions configure one control-plane replica process on a shared
// etcd store.
type ReplicaOptions struct {
	Name string
	// Store is the -store value, etcd://...
	Store string
	// SeedPolicy seeds an empty store.
	SeedPolicy string
	// TokenFile holds the admin token (the same for every replica).
	TokenFile string
	// LeaseTTL is short in tests, so a killed replica's records and
	// leaderships go quickly.
	LeaseTTL time.Duration
	// Modules serves the modules from the replica (Replica.ModulesAddr),
	// as to remote Envoys; without it Envoys read module files.
	Modules bool
	// Native, when set, is the dynamic module the replica serves to the
	// nodes that ask for the native build.
	Native string
	// Restart, when set, is a killed replica this one takes the place of:
	// the same addresses, so Envoys whose bootstraps name them find it.
	Restart *Replica
	// Args are more flags.
	Args []string
}

// Replica is a running bin/directpipe with a shared store.
type Replica struct {
	Name        string
	XDSAddr     string
	AdminAddr   string
	MetricsAddr string
	// ModulesAddr is the module server's address, "" without Modules.
	ModulesAddr string
	LogPath     string
	cmd         *exec.Cmd
	done        chan struct{}
}

// StartReplica runs bin/directpipe as a process (so that a test can kill
// it with SIGKILL) and waits until it listens; whether it is ready is
// Ready's question.
func StartReplica(t T, opts ReplicaOptions) *Replica {
	t.Helper()
	r := &Replica{
		Name:        opts.Name,
		XDSAddr:     "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		AdminAddr:   "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		MetricsAddr: "127.0.0.1:" + strconv.Itoa(FreePort(t)),
		LogPath:     filepath.Join(t.TempDir(), opts.Name+".log"),
	}
	if opts.Modules {
		r.ModulesAddr = "127.0.0.1:" + strconv.Itoa(FreePort(t))
	}
	if old := opts.Restart; old != nil {
		r.XDSAddr, r.AdminAddr, r.MetricsAddr, r.ModulesAddr = old.XDSAddr, old.AdminAddr, old.MetricsAddr, old.ModulesAddr
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = 2 * time.Second
	}
	args := []string{
		"-store", opts.Store, "-replica", opts.Name, "-lease-ttl", opts.LeaseTTL.String(),
		"-xds-addr", r.XDSAddr, "-admin-addr", r.AdminAddr, "-metrics-addr", r.MetricsAddr,
		"-modules-addr", r.ModulesAddr, "-wasm", WasmModule(t),
		"-admin-token-file", opts.TokenFile, "-state-dir", t.TempDir(),
	}
	if opts.Native != "" {
		args = append(args, "-native", opts.Native)
	}
	if opts.SeedPolicy != "" {
		args = append(args, "-policy", opts.SeedPolicy)
	}
	r.cmd = exec.Command(Binary(t, "directpipe"), append(args, opts.Args...)...)
	logf, err := os.Create(r.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("start replica %s: %v", opts.Name, err)
	}
	r.done = make(chan struct{})
	go func() { _ = r.cmd.Wait(); logf.Close(); close(r.done) }()
	t.Cleanup(func() {
		r.Kill()
		if t.Failed() {
			t.Logf("replica %s log, last lines:\n%s", r.Name, tail(r.LogPath, 30))
		}
	})
	for _, addr := range []string{r.XDSAddr, r.AdminAddr, r.MetricsAddr, r.ModulesAddr} {
		if addr == "" {
			continue
		}
		if err := WaitListening(addr, 30*time.Second); err != nil {
			t.Fatalf("replica %s: %v\n%s", r.Name, err, tail(r.LogPath, 30))
		}
	}
	return r
}

// Kill ends the replica with SIGKILL: no goodbye to etcd, its lease
// expires by itself.
func (r *Replica) Kill() {
	if r.cmd.Process != nil {
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-r.done
}

// Alive reports whether the process runs.
func (r *Replica) Alive() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// Ready asks /readyz.
func (r *Replica) Ready(ctx context.Context) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.MetricsAddr+"/readyz", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// WaitReady waits until /readyz answers 200.
func (r *Replica) WaitReady(ctx context.Context) error {
	err := poll(ctx, func() (bool, error) {
		if !r.Alive() {
			return false, fmt.Errorf("replica %s exited", r.Name)
		}
		ok, _ := r.Ready(ctx)
		return ok, nil
	})
	if err != nil {
		return fmt.Errorf("%w\n%s", err, tail(r.LogPath, 30))
	}
	return nil
}
