//go:build linux

package latencylab

import (
	"fmt"
	"strings"
)

// writePushes renders the change-to-ACK rows and, for each, what happened
// to the Envoy on the way.
func (r *Report) writePushes(b *strings.Builder) {
	if len(r.Pushes) == 0 {
		return
	}
	b.WriteString("\n## Change to ACK\n\n")
	b.WriteString("From the change (the admin API call, or the file's rename) until every connected node ACKed every type of the new snapshot, " +
		"as the control plane records the ACKs.\n\n")
	b.WriteString("| change | nodes | changes | p50 ms | p99 ms | max ms | failures |\n|---|---|---|---|---|---|---|\n")
	for _, p := range r.Pushes {
		note := ""
		if p.Note != "" {
			note = " (" + p.Note + ")"
		}
		fmt.Fprintf(b, "| %s | %d | %d | %s | %s | %s | %d%s |\n", p.Name, p.Nodes, p.Latency.Count,
			ms(p.Latency.P50), ms(p.Latency.P99), ms(p.Latency.Max), p.Failures, note)
	}
	b.WriteString("\nThe Envoy's timeline, each step the median of its offsets from the change (ms):\n\n")
	for _, p := range r.Pushes {
		var steps []string
		for _, s := range p.Timeline {
			steps = append(steps, fmt.Sprintf("%s %s", s.What, ms(s.At)))
		}
		fmt.Fprintf(b, "- `%s` (%s): %s\n", p.Name, p.Description, strings.Join(steps, ", "))
	}
}
