package dpctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"

	"github.com/directpipe/directpipe/controlplane/audit"
)

// findingsError is an audit that found something at or above --fail-on:
// exit code 3, so that a pipeline can tell it from a failure to audit.
type findingsError struct {
	n   int
	min audit.Severity
}

func (e findingsError) Error() string {
	return fmt.Sprintf("%d findings at or above %s", e.n, e.min)
}

// auditOpts are audit's own flags.
type auditOpts struct{ adminURL, file, serverInfo, stats, failOn string }

func auditFlags(fs *flag.FlagSet, o *auditOpts) {
	fs.StringVar(&o.adminURL, "envoy-admin", "", "Envoy admin: a URL (http://127.0.0.1:9901) or unix:PATH (the socket envoy-bootstrap makes)")
	fs.StringVar(&o.file, "f", "", "a saved /config_dump (JSON) instead of a live Envoy")
	fs.StringVar(&o.serverInfo, "server-info", "", "with -f: a saved /server_info (JSON)")
	fs.StringVar(&o.stats, "stats", "", "with -f: a saved /stats?format=json")
	fs.StringVar(&o.failOn, "fail-on", "", "exit 3 when a finding is at or above this severity (info, low, medium, high)")
}

// auditCmd runs `dpctl audit`: it needs no control plane, only an Envoy's
// admin interface or a saved config dump.
func auditCmd(ctx context.Context, g *globals, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpctl audit", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	var o auditOpts
	auditFlags(fs, &o)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(out, lookup("audit"), fs)
			return helpShown{}
		}
		return usageError{msg: err.Error(), cmd: "audit"}
	}
	adminURL, file, serverInfo, stats, failOn := o.adminURL, o.file, o.serverInfo, o.stats, o.failOn
	if fs.NArg() > 0 {
		return usageError{msg: fmt.Sprintf("unexpected argument %q", fs.Arg(0)), cmd: "audit"}
	}
	if (adminURL == "") == (file == "") {
		return usageError{msg: "audit needs --envoy-admin URL or -f FILE", cmd: "audit"}
	}
	if adminURL != "" && (serverInfo != "" || stats != "") {
		return usageError{msg: "--server-info and --stats go with -f", cmd: "audit"}
	}
	if g.output != "table" && g.output != "json" && g.output != "yaml" {
		return usageError{msg: fmt.Sprintf("-o %s: want table, json or yaml", g.output)}
	}
	min := audit.Severity(-1)
	if failOn != "" {
		var err error
		if min, err = audit.ParseSeverity(failOn); err != nil {
			return usageError{msg: "--fail-on: " + err.Error(), cmd: "audit"}
		}
	}
	var in audit.Input
	if adminURL != "" {
		ctx, cancel := context.WithTimeout(ctx, g.timeout)
		defer cancel()
		var err error
		if in, err = audit.Fetch(ctx, &http.Client{}, adminURL); err != nil {
			return err
		}
	} else {
		for _, f := range []struct {
			path string
			dst  *[]byte
		}{{file, &in.ConfigDump}, {serverInfo, &in.ServerInfo}, {stats, &in.Stats}} {
			if f.path == "" {
				continue
			}
			b, err := audit.ReadFile(f.path)
			if err != nil {
				return err
			}
			*f.dst = b
		}
	}
	in.ReadFile = audit.ReadFile
	rep, err := audit.Run(in)
	if err != nil {
		return err
	}
	if err := printReport(out, g.output, rep); err != nil {
		return err
	}
	if min >= 0 {
		if n := rep.Count(min); n > 0 {
			return findingsError{n, min}
		}
	}
	return nil
}

func printReport(out io.Writer, format string, rep *audit.Report) error {
	if format != "table" {
		js, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if format == "yaml" {
			if js, err = yaml.JSONToYAML(js); err != nil {
				return err
			}
		}
		_, err = fmt.Fprintln(out, strings.TrimSpace(string(js)))
		return err
	}
	if rep.Envoy != "" {
		fmt.Fprintf(out, "Envoy %s\n\n", rep.Envoy)
	}
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "LISTENER\tKIND\tROUTE\tCLUSTER\tCHAIN\tIDLE TIMEOUT\tFINDINGS")
	for _, s := range rep.Streams {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Listener, s.Kind, s.Route, s.Cluster,
			strings.Join(s.Chain, ","), s.IdleTimeout, counts(s.Findings))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if len(rep.Streams) == 0 {
		fmt.Fprintln(out, "(no route or tcp_proxy carries WebSockets or raw streams)")
	}
	for _, f := range rep.Findings {
		fmt.Fprintf(out, "\n%-6s  %s\n        at:    %s\n        found: %s\n        why:   %s\n        fix:   %s\n",
			strings.ToUpper(f.Severity.String()), f.Check, f.Path, f.Found, f.Why, f.Fix)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(out, "\nnote: %s", n)
	}
	if len(rep.Notes) > 0 {
		fmt.Fprintln(out)
	}
	total := map[string]int{}
	for _, f := range rep.Findings {
		total[f.Severity.String()]++
	}
	_, err := fmt.Fprintf(out, "\n%d findings: %s\n", len(rep.Findings), counts(total))
	return err
}

// counts prints "2 high, 1 low", most severe first, or "none".
func counts(by map[string]int) string {
	var parts []string
	for _, s := range []audit.Severity{audit.High, audit.Medium, audit.Low, audit.Info} {
		if n := by[s.String()]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
