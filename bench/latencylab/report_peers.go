//go:build linux

package latencylab

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// ourPaths are the paths directpipe offers, compared with the best peer.
var ourPaths = []string{"direct", "tcp", "tcp-auth"}

func (r *Report) path(name string) *Path {
	for _, p := range r.Paths {
		if p.Name == name && p.Available {
			return p
		}
	}
	return nil
}

func (r *Report) capacityOf(name string) *Capacity {
	for _, c := range r.Capacity {
		if c.Path == name {
			return c
		}
	}
	return nil
}

// bestPeer is the peer with the lowest p50 round trip.
func (r *Report) bestPeer() *Path {
	var best *Path
	for _, pr := range peers {
		if p := r.path(pr.name); p != nil && (best == nil || p.RTT.P50 < best.RTT.P50) {
			best = p
		}
	}
	return best
}

func (r *Report) writeSetup(b *strings.Builder) {
	fmt.Fprintf(b, "Placement: %s. Every proxy runs %d workers (Envoy's concurrency, nginx's worker processes, HAProxy's threads).", r.Placement, r.Config.Workers)
	var names []string
	for name := range r.Peers {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(b, " %s: %s.", name, r.Peers[name])
	}
	b.WriteString("\n\n")
}

// streamsPerCore is how many streams of one frame per interval a core
// carries when each frame costs cpuPer10k/10,000 CPU seconds.
func streamsPerCore(cpuPer10k float64, interval time.Duration) int {
	if cpuPer10k <= 0 || interval <= 0 {
		return 0
	}
	perStream := cpuPer10k / 10000 * (float64(time.Second) / float64(interval))
	return int(1 / perStream)
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func (r *Report) writePeerSections(b *strings.Builder) {
	if best := r.bestPeer(); best != nil {
		fmt.Fprintf(b, "\n## Ours against the best peer (%s)\n\n", best.Name)
		b.WriteString("Target: p50 and p99 within 1.2× of the best peer, capacity at least 0.8× of its.\n\n")
		b.WriteString("| path | p50 vs peer | p99 vs peer | capacity vs peer | CPU / frame vs peer |\n|---|---|---|---|---|\n")
		bestCap := r.capacityOf(best.Name)
		for _, name := range ourPaths {
			p := r.path(name)
			if p == nil {
				continue
			}
			capRatio := "–"
			if c := r.capacityOf(name); c != nil && bestCap != nil {
				capRatio = ratio(float64(c.Streams), float64(bestCap.Streams))
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s |\n", name, ratio(float64(p.RTT.P50), float64(best.RTT.P50)),
				ratio(float64(p.RTT.P99), float64(best.RTT.P99)), capRatio, ratio(p.ProxyCPUPer10k, best.ProxyCPUPer10k))
		}
	}
	if len(r.Capacity) > 0 {
		fmt.Fprintf(b, "\n## Capacity (concurrent streams of %v frames, p99 < %v, nothing lost)\n\n", r.Config.Interval, CapacityP99)
		fmt.Fprintf(b, "Each step runs every stream for %d frames; the load doubles from %d until a step fails (or reaches %d), then bisects %d times.\n\n",
			r.Config.Capacity.Frames, r.Config.Capacity.Start, r.Config.Capacity.Max, r.Config.Capacity.Refine)
		b.WriteString("The last column is where the proxy's CPU alone would stop it: one core over its CPU per stream at that load " +
			"(the search itself also stops where the probe, the back end or the neighbours stall frames).\n\n")
		b.WriteString("| path | streams | p99 ms there | proxy CPU s / 10k frames there | steps (streams: p99 ms, ✓/✗) | streams one proxy core carries at that CPU |\n|---|---|---|---|---|---|\n")
		for _, c := range r.Capacity {
			streams, p99, cpu, perCore := fmt.Sprint(c.Streams), "–", "–", "–"
			if c.AtMax {
				streams = "≥ " + streams
			}
			if s := c.best(); s != nil {
				p99 = ms(s.P99)
				if s.ProxyCPUPer10k > 0 {
					cpu = fmt.Sprintf("%.3f", s.ProxyCPUPer10k)
					perCore = fmt.Sprint(streamsPerCore(s.ProxyCPUPer10k, r.Config.Interval))
				}
			}
			var steps []string
			for _, s := range c.Steps {
				mark := "✗"
				if s.Pass {
					mark = "✓"
				}
				steps = append(steps, fmt.Sprintf("%d: %s %s", s.Streams, ms(s.P99), mark))
			}
			fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", c.Path, streams, p99, cpu, strings.Join(steps, ", "), perCore)
		}
	}
	if len(r.Profiles) > 0 {
		b.WriteString("\n## Where the proxy spends a frame round trip\n\n")
		b.WriteString("Per frame echoed (client → proxy → back end → proxy → client). CPU (and its share in user space) and wake-ups (voluntary context switches) from /proc; " +
			"system calls from perf's raw_syscalls tracepoint; the breakdown from `strace -c -f` in a second run (f = failed, e.g. a read that found nothing).\n\n")
		b.WriteString("| proxy | processes / threads | CPU µs / frame | in user space | wake-ups / frame | preempted / frame | syscalls / frame | strace -c per frame |\n|---|---|---|---|---|---|---|---|\n")
		for _, p := range r.Profiles {
			sys := "–"
			if p.SyscallsPerFrame > 0 {
				sys = fmt.Sprintf("%.2f", p.SyscallsPerFrame)
			}
			var rows []string
			for _, s := range p.Syscalls {
				if s.PerFrame < 0.05 {
					continue
				}
				row := fmt.Sprintf("%s %.2f", s.Name, s.PerFrame)
				if s.ErrorsPerFrame >= 0.05 {
					row += fmt.Sprintf(" (%.2f f)", s.ErrorsPerFrame)
				}
				rows = append(rows, row)
			}
			note := ""
			if p.Note != "" {
				note = " (" + p.Note + ")"
			}
			fmt.Fprintf(b, "| %s | %d / %d | %.1f | %.0f%% | %.2f | %.2f | %s | %s%s |\n", p.Path, p.Processes, p.Threads,
				float64(p.CPUPerFrame.Nanoseconds())/1000, p.UserShare*100, p.WakeupsPerFrame, p.InvoluntaryPerFrame, sys, strings.Join(rows, ", "), note)
		}
	}
	r.writeTunings(b)
	if len(r.Storms) > 0 {
		b.WriteString("\n## Reconnect storm\n\n")
		b.WriteString("Every client streams, then all drop their connections at the same instant (no close handshake, as in a network blip) and dial again at once, retrying every 10 ms. " +
			"Time from the cut to each client's first echo.\n\n")
		b.WriteString("| path | clients | back | all back ms | p50 ms | p99 ms | failed attempts |\n|---|---|---|---|---|---|---|\n")
		for _, s := range r.Storms {
			note := ""
			if s.Note != "" {
				note = " (" + s.Note + ")"
			}
			fmt.Fprintf(b, "| %s | %d | %d%s | %s | %s | %s | %d |\n", s.Path, s.Clients, s.Recovered, note, ms(s.AllBack), ms(s.Back.P50), ms(s.Back.P99), s.Failures)
		}
	}
}

func (r *Report) writeTunings(b *strings.Builder) {
	if len(r.Tunings) == 0 || r.Tunings[0].Path == nil || !r.Tunings[0].Path.Available {
		return
	}
	base := r.Tunings[0]
	var best *Path
	for _, p := range r.TuningRefs {
		if p.Available && p.Name != "no-proxy" && (best == nil || p.RTT.P50 < best.RTT.P50) {
			best = p
		}
	}
	b.WriteString("\n## Envoy settings tried (each its own Envoy, same rotated rounds, against the first row)\n\n")
	if len(r.TuningRefs) > 0 {
		b.WriteString("The floor and the peers ran in the same rounds:")
		for _, p := range r.TuningRefs {
			if p.Available {
				fmt.Fprintf(b, " %s p50 %s ms, p99 %s ms, CPU %.1f µs / frame;", p.Name, ms(p.RTT.P50), ms(p.RTT.P99), p.ProxyCPUPer10k*100)
			}
		}
		b.WriteString(" the last two columns are against the best of the peers.\n\n")
	}
	b.WriteString("| setting | p50 ms | p99 ms | p50 vs baseline | p99 vs baseline | CPU µs / frame | CPU vs baseline | syscalls / frame | wake-ups / frame | lost | p50 vs best peer | p99 vs best peer |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, t := range r.Tunings {
		p := t.Path
		if p == nil || !p.Available {
			fmt.Fprintf(b, "| %s | – | – | – | – | – | – | – | – | – | – | – |\n", t.Name)
			continue
		}
		sys, wake := "–", "–"
		if t.Profile != nil {
			if t.Profile.SyscallsPerFrame > 0 {
				sys = fmt.Sprintf("%.2f", t.Profile.SyscallsPerFrame)
			}
			wake = fmt.Sprintf("%.2f", t.Profile.WakeupsPerFrame)
		}
		vs50, vs99 := "–", "–"
		if best != nil {
			vs50, vs99 = ratio(float64(p.RTT.P50), float64(best.RTT.P50)), ratio(float64(p.RTT.P99), float64(best.RTT.P99))
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %.1f | %s | %s | %s | %d | %s | %s |\n", t.Name, ms(p.RTT.P50), ms(p.RTT.P99),
			ratio(float64(p.RTT.P50), float64(base.Path.RTT.P50)), ratio(float64(p.RTT.P99), float64(base.Path.RTT.P99)),
			p.ProxyCPUPer10k*100, ratio(p.ProxyCPUPer10k, base.Path.ProxyCPUPer10k), sys, wake, p.Lost, vs50, vs99)
	}
	b.WriteString("\n")
	for _, t := range r.Tunings {
		fmt.Fprintf(b, "- `%s`: %s\n", t.Name, t.Description)
	}
}
