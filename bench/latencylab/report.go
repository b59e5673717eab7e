//go:build linux

package latencylab

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"
)

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

// baseline is the no-proxy path, the floor every ratio is taken against.
func (r *Report) baseline() *Path {
	for _, p := range r.Paths {
		if p.Name == "no-proxy" && p.Available {
			return p
		}
	}
	return nil
}

// Markdown renders the tables of results.md.
func (r *Report) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "# directpipe latency lab\n\n%d cores, Linux %s, Envoy %s, %s, %s.\n\n", m.Cores, m.Kernel, m.Envoy, m.Go, m.When)
	fmt.Fprintf(&b, "%d streams × %d frames of 640 bytes every %v per path and round, %d rounds in a rotated order after a warm-up, on loopback, in one run. "+
		"Ratios are against `no-proxy` measured in the same run; absolute times on a shared 2-core machine are noisy.\n\n",
		r.Config.Streams, r.Config.Frames, r.Config.Interval, max(r.Config.Rounds, 1))
	r.writeSetup(&b)
	r.writePaths(&b)
	r.writePeerSections(&b)
	r.writeHandshakes(&b)
	r.writeControlPlane(&b)
	r.writePushes(&b)
	r.writeFleet(&b)
	return b.String()
}

func (r *Report) writePaths(b *strings.Builder) {
	if len(r.Paths) == 0 {
		return
	}
	b.WriteString("## Round trip per frame\n\n")
	b.WriteString("| path | p50 ms | p99 ms | p99.9 ms | p50 vs no-proxy | p99 vs no-proxy | received | reordered | lost | disconnects | proxy CPU s / 10k frames |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
	base := r.baseline()
	for _, p := range r.Paths {
		if !p.Available {
			fmt.Fprintf(b, "| %s | – | – | – | – | – | – | – | – | – | – (%s) |\n", p.Name, p.Note)
			continue
		}
		ratio50, ratio99 := "–", "–"
		if base != nil && base.RTT.P50 > 0 {
			ratio50 = fmt.Sprintf("%.2f×", float64(p.RTT.P50)/float64(base.RTT.P50))
			ratio99 = fmt.Sprintf("%.2f×", float64(p.RTT.P99)/float64(base.RTT.P99))
		}
		cpu := "–"
		if p.ProxyCPUPer10k > 0 {
			cpu = fmt.Sprintf("%.3f", p.ProxyCPUPer10k)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %d/%d | %d | %d | %d | %s |\n", p.Name,
			ms(p.RTT.P50), ms(p.RTT.P99), ms(p.RTT.P999), ratio50, ratio99, p.Received, p.Sent, p.Reordered, p.Lost, p.Disconnects, cpu)
	}
	b.WriteString("\n")
	for _, p := range r.Paths {
		fmt.Fprintf(b, "- `%s`: %s\n", p.Name, p.Description)
	}
}

// writeHandshakes and writeControlPlane skip their sections when a
// selective run (-sections) did not measure them.
func (r *Report) writeHandshakes(b *strings.Builder) {
	if len(r.Handshakes) == 0 {
		return
	}
	b.WriteString("\n## Handshake (open one stream: connect, upgrade, check, 101)\n\n")
	b.WriteString("| auth mode | p50 ms | p99 ms | vs no auth (p50) | vs jwt_authn, same alg (p50) | failures |\n|---|---|---|---|---|---|\n")
	var noAuth time.Duration
	jwtAuthn := map[string]time.Duration{}
	for _, h := range r.Handshakes {
		if !h.Available {
			continue
		}
		if strings.HasPrefix(h.Mode, "no auth") {
			noAuth = h.Latency.P50
		}
		if alg := handshakeAlg(h.Mode); alg != "" && strings.HasPrefix(h.Mode, "Envoy jwt_authn") {
			jwtAuthn[alg] = h.Latency.P50
		}
	}
	for _, h := range r.Handshakes {
		if !h.Available {
			fmt.Fprintf(b, "| %s | – | – | – | – | – (%s) |\n", h.Mode, h.Note)
			continue
		}
		ratio, vsJWT := "–", "–"
		if noAuth > 0 {
			ratio = fmt.Sprintf("%.2f×", float64(h.Latency.P50)/float64(noAuth))
		}
		if j := jwtAuthn[handshakeAlg(h.Mode)]; j > 0 && !strings.HasPrefix(h.Mode, "tcp mode") {
			vsJWT = fmt.Sprintf("%.2f×", float64(h.Latency.P50)/float64(j))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %d |\n", h.Mode, ms(h.Latency.P50), ms(h.Latency.P99), ratio, vsJWT, h.Failures)
	}
}

// handshakeAlg is the JWT algorithm a handshake mode names, "" for none.
func handshakeAlg(mode string) string {
	for _, alg := range []string{"HS256", "RS256", "ES256"} {
		if strings.Contains(mode, ", "+alg) {
			return alg
		}
	}
	return ""
}

func (r *Report) writeControlPlane(b *strings.Builder) {
	if len(r.Translation) == 0 {
		return
	}
	b.WriteString("\n## Control plane\n\n| routes | validate + translate ms |\n|---|---|\n")
	for _, t := range r.Translation {
		fmt.Fprintf(b, "| %d | %s |\n", t.Routes, ms(t.Time))
	}
}
