//go:build linux

package latencylab

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/directpipe/directpipe/envoy/testkit"
)

// The peers are the proxies a user would pick instead of Envoy, configured
// as plain WebSocket reverse proxies, from Debian's packages (`make
// bench-tools` installs them).
var (
	//go:embed nginx.conf.tmpl
	nginxTemplate string
	//go:embed haproxy.cfg.tmpl
	haproxyTemplate string
)

// peerMaxConnections bounds each peer's connections: twice the most streams
// the capacity search tries, within the lab's file limit.
const peerMaxConnections = 4096

// peer is one proxy the lab starts: its binary, its config and the
// command line that runs it in the foreground.
type peer struct {
	name, desc string
	binary     string
	config     string // template
	file       string // config file name
	args       func(dir, cfg string) []string
}

var peers = []peer{
	{
		name: "nginx", desc: "nginx (Debian), plain WebSocket reverse proxy",
		binary: "nginx", config: nginxTemplate, file: "nginx.conf",
		args: func(dir, cfg string) []string {
			return []string{"-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", cfg}
		},
	},
	{
		name: "haproxy", desc: "HAProxy (Debian), HTTP mode, WebSocket tunnel",
		binary: "haproxy", config: haproxyTemplate, file: "haproxy.cfg",
		args: func(dir, cfg string) []string { return []string{"-db", "-f", cfg} },
	},
}

// daemon is a proxy running as its own process group (nginx forks its
// workers), pinned from its start so that every process it forks inherits
// the cores.
type daemon struct {
	t       testkit.T
	name    string
	addr    string
	argv    []string
	logPath string
	cmd     *exec.Cmd
	version string
}

// findBinary looks for a peer on PATH and where Debian puts it.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	p := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s is not installed: run `make bench-tools` (Debian's %s package)", name, name)
	}
	return p, nil
}

// startPeer writes the peer's config for port and starts it.
func (l *lab) startPeer(p peer, port, voicePort int) (*daemon, error) {
	bin, err := findBinary(p.binary)
	if err != nil {
		return nil, err
	}
	dir := l.t.TempDir()
	var buf bytes.Buffer
	err = template.Must(template.New(p.name).Parse(p.config)).Execute(&buf, map[string]any{
		"Dir": dir, "Port": port, "VoicePort": voicePort, "Workers": l.cfg.Workers,
		"MaxConnections": peerMaxConnections, "MaxFiles": 2*peerMaxConnections + 64,
	})
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, p.file)
	if err := os.WriteFile(cfg, buf.Bytes(), 0o644); err != nil {
		return nil, err
	}
	argv := append([]string{bin}, p.args(dir, cfg)...)
	if cpus := l.placement.Proxy; len(cpus) > 0 {
		argv = append([]string{"taskset", "-c", cpuList(cpus)}, argv...)
	}
	d := &daemon{t: l.t, name: p.name, addr: fmt.Sprintf("127.0.0.1:%d", port), argv: argv,
		logPath: filepath.Join(dir, "out.log"), version: peerVersion(bin)}
	if err := d.start(); err != nil {
		return nil, err
	}
	l.t.Cleanup(d.stop)
	return d, nil
}

func (d *daemon) start() error {
	logFile, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logFile.Close()
	d.cmd = exec.Command(d.argv[0], d.argv[1:]...)
	d.cmd.Stdout, d.cmd.Stderr = logFile, logFile
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", d.name, err)
	}
	if err := testkit.WaitListening(d.addr, 10*time.Second); err != nil {
		d.stop()
		b, _ := os.ReadFile(d.logPath)
		return fmt.Errorf("%s: %w\n%s", d.name, err, b)
	}
	return nil
}

// stop kills the whole process group: nginx's workers too.
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
	d.cmd.Wait()
	d.cmd = nil
}

// PIDs are the process (taskset execs into the proxy, keeping its pid) and
// its children: nginx's workers.
func (d *daemon) PIDs() []int {
	if d.cmd == nil || d.cmd.Process == nil {
		return nil
	}
	pid := d.cmd.Process.Pid
	return append([]int{pid}, children(pid)...)
}

// peerVersion is the first line a peer prints about itself.
func peerVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// startPeers starts every peer on a free port, in front of the voice back
// end.
func (l *lab) startPeers() error {
	_, vp, _ := strings.Cut(l.backend.VoiceAddr, ":")
	voicePort, _ := strconv.Atoi(vp)
	l.peers = map[string]*daemon{}
	for _, p := range peers {
		d, err := l.startPeer(p, testkit.FreePort(l.t), voicePort)
		if err != nil {
			return err
		}
		l.peers[p.name] = d
	}
	return nil
}

// peerRunners measure each peer as a path.
func (l *lab) peerRunners() []pathRunner {
	var out []pathRunner
	for _, p := range peers {
		d := l.peers[p.name]
		out = append(out, l.streamRunner(p.name, p.desc, "ws://"+d.addr+"/v1/voice", nil, d))
	}
	return out
}

func (l *lab) peerVersions() map[string]string {
	out := map[string]string{}
	for name, d := range l.peers {
		out[name] = d.version
	}
	return out
}
