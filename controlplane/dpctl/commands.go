package dpctl

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"sigs.k8s.io/yaml"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/translate"
	"github.com/directpipe/directpipe/controlplane/xdstype"
)

// structured prints a message as JSON or YAML when asked to; it reports
// whether it did.
func (c *cli) structured(m proto.Message) (bool, error) {
	if c.g.output == "table" {
		return false, nil
	}
	js, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(m)
	if err != nil {
		return true, err
	}
	if c.g.output == "yaml" {
		if js, err = yaml.JSONToYAML(js); err != nil {
			return true, err
		}
	}
	_, err = fmt.Fprintln(c.out, strings.TrimSpace(string(js)))
	return true, err
}

// printDoc prints a plain Go value as JSON or YAML (-o).
func (c *cli) printDoc(v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if c.g.output == "yaml" {
		if js, err = yaml.JSONToYAML(js); err != nil {
			return err
		}
	}
	_, err = fmt.Fprintln(c.out, strings.TrimSpace(string(js)))
	return err
}

func (c *cli) status(ctx context.Context) error {
	resp, err := c.client.ListNodes(ctx, &adminv1.ListNodesRequest{})
	if err != nil {
		return err
	}
	if done, err := c.structured(resp); done {
		return err
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	// Replicas name the one serving each node; alone, the column is left out.
	replicas := slices.ContainsFunc(resp.GetNodes(), func(n *adminv1.Node) bool { return n.GetReplica() != "" })
	fmt.Fprint(w, "NODE\tCLUSTER\tVERSION\tXDS")
	if replicas {
		fmt.Fprint(w, "\tREPLICA")
	}
	fmt.Fprint(w, "\tFILTER\tWASM")
	for _, k := range xdstype.Kinds() {
		fmt.Fprintf(w, "\t%s", k.Abbrev)
	}
	fmt.Fprintln(w)
	var notes []string
	for _, n := range resp.GetNodes() {
		if !n.GetConnected() {
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s", n.GetId(), n.GetCluster(), n.GetEnvoyVersion(), n.GetXdsFlavour())
		if replicas {
			fmt.Fprintf(w, "\t%s", n.GetReplica())
		}
		state, note := wasmCell(n.GetWasm())
		fmt.Fprintf(w, "\t%s\t%s", cmp.Or(n.GetFilter(), "-"), state)
		if note != "" {
			notes = append(notes, n.GetId()+": "+note)
		}
		byType := map[string]*adminv1.ResourceStatus{}
		for _, r := range n.GetResources() {
			byType[r.GetType()] = r
		}
		for _, k := range xdstype.Kinds() {
			r := byType[k.Name()]
			fmt.Fprintf(w, "\t%s", cell(r))
			if r.GetState() == adminv1.SyncState_NACKED {
				notes = append(notes, fmt.Sprintf("%s rejected %s version %s: %s",
					n.GetId(), k.Abbrev, r.GetLastNack().GetVersion(), r.GetLastNack().GetError()))
			}
		}
		fmt.Fprintln(w)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, line := range notes {
		fmt.Fprintln(c.out, line)
	}
	if r := resp.GetPolicyRejected(); r != nil {
		fmt.Fprintf(c.out, "policy from %s REFUSED at %s; the last good policy keeps serving: %s\n",
			r.GetSource(), r.GetAt().AsTime().Format(time.RFC3339), r.GetError())
	}
	return nil
}

// wasmCell is a node's Wasm VM state in the status table, and a line that
// says more when a VM has failed: "-" for a node that streams no stats,
// OK, RELOADED (it failed, and Envoy started a new one), FAILING (the
// latest reload failed or waits for its backoff).
func wasmCell(h *adminv1.WasmHealth) (string, string) {
	switch {
	case h == nil:
		return "-", ""
	case h.GetFailing():
		return "FAILING", fmt.Sprintf("a Wasm VM failed and is not running: its handshake filters refuse traffic (%d reloads, %d failed); last %s",
			h.GetReloads(), h.GetFailures(), h.GetLastFailure().AsTime().Format(time.RFC3339))
	case h.GetReloads()+h.GetFailures() > 0:
		return "RELOADED", fmt.Sprintf("a Wasm VM failed and was reloaded (%d reloads, %d failed); last %s",
			h.GetReloads(), h.GetFailures(), h.GetLastFailure().AsTime().Format(time.RFC3339))
	}
	return "OK", ""
}

func cell(r *adminv1.ResourceStatus) string {
	switch r.GetState() {
	case adminv1.SyncState_SYNCED:
		return "SYNCED (" + short(r.GetAckedVersion()) + ")"
	case adminv1.SyncState_STALE:
		return "STALE"
	case adminv1.SyncState_NACKED:
		return "NACKED"
	}
	return "NOT SENT"
}

func short(v string) string {
	if len(v) > 8 {
		return v[:8]
	}
	return v
}

func (c *cli) nodes(ctx context.Context) error {
	resp, err := c.client.ListNodes(ctx, &adminv1.ListNodesRequest{})
	if err != nil {
		return err
	}
	if done, err := c.structured(resp); done {
		return err
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tCLUSTER\tVERSION\tXDS\tCONNECTED\tSINCE\tLAST SEEN\tREPLICA")
	for _, n := range resp.GetNodes() {
		seen := "-"
		if n.GetLastSeen() != nil {
			seen = ago(n.GetLastSeen().AsTime())
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%v\t%s\t%s\t%s\n", n.GetId(), n.GetCluster(), n.GetEnvoyVersion(), n.GetXdsFlavour(),
			n.GetConnected(), n.GetConnectedSince().AsTime().Format(time.RFC3339), seen, n.GetReplica())
	}
	return w.Flush()
}

func ago(t time.Time) string {
	return time.Since(t).Round(time.Second).String() + " ago"
}

func (c *cli) policyGet(ctx context.Context) error {
	resp, err := c.client.GetPolicy(ctx, &adminv1.GetPolicyRequest{IncludeYaml: c.g.output == "table"})
	if err != nil {
		return err
	}
	if done, err := c.structured(resp); done {
		return err
	}
	// The text as stored, comments included, when the store keeps it.
	out := []byte(resp.GetPolicyYaml())
	if len(out) == 0 {
		if out, err = policy.Marshal(resp.GetPolicy()); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.out, "# revision: %s\n%s", resp.GetRevision(), out)
	if len(out) > 0 && out[len(out)-1] != '\n' {
		fmt.Fprintln(c.out)
	}
	return nil
}

type localPolicy struct {
	path   string
	policy *policyv1.Policy
	// source is the file's text: what an apply stores, and where error
	// lines point.
	source []byte
}

// readPolicy decodes a file strictly; reference checks are the server's, so
// that the server's view of validity is the one that counts.
func readPolicy(path string) (*localPolicy, error) {
	data, err := policy.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := policy.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &localPolicy{path: path, policy: p, source: data}, nil
}

var errInvalid = errors.New("the policy is invalid")

func (c *cli) policyValidate(ctx context.Context, l *localPolicy) error {
	resp, err := c.client.ValidatePolicy(ctx, &adminv1.ValidatePolicyRequest{Policy: l.policy})
	if err != nil {
		return err
	}
	if done, err := c.structured(resp); done {
		if err == nil && len(resp.GetErrors()) > 0 {
			return errInvalid
		}
		return err
	}
	return c.printValidation(l, resp)
}

// printValidation prints a validation's errors, each with the line of the
// file that sets the field it names, or that the file is valid.
func (c *cli) printValidation(l *localPolicy, resp *adminv1.ValidatePolicyResponse) error {
	if len(resp.GetErrors()) == 0 {
		fmt.Fprintf(c.out, "%s: valid\n", l.path)
		for _, w := range resp.GetWarnings() {
			fmt.Fprintf(c.out, "%s: warning: %s\n", l.path, w)
		}
		return nil
	}
	for _, e := range resp.GetErrors() {
		if !strings.Contains(e, "(line ") {
			e = policy.WithLines(errors.New(e), l.source).Error()
		}
		fmt.Fprintf(c.out, "%s: %s\n", l.path, e)
	}
	return errInvalid
}

// policyValidateOffline validates a policy with no control plane: the
// schema, the validator and the translation to Envoy resources (each
// checked as Envoy would), all but what only a running control plane
// knows (its own addresses; the keys behind jwks_file and jwks_url).
func (c *cli) policyValidateOffline(l *localPolicy) error {
	resp := &adminv1.ValidatePolicyResponse{}
	p, err := policy.Parse(l.source)
	if err == nil {
		// The module's location changes no check; any file will do.
		_, err = translate.Translate(p, translate.Options{Module: translate.ModuleSource{File: "handshake.wasm"}})
	}
	if err != nil {
		resp.Errors = splitErrors(err)
	} else {
		resp.Warnings = policy.Warnings(p)
	}
	if done, err := c.structured(resp); done {
		if err == nil && len(resp.GetErrors()) > 0 {
			return errInvalid
		}
		return err
	}
	return c.printValidation(l, resp)
}

// splitErrors unwraps errors.Join so that each problem is its own line.
func splitErrors(err error) []string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, splitErrors(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// policyApply applies (or with dryRun, diffs) a policy. Without an explicit
// revision it bases the change on the revision served right now: a plain
// read-modify-write that --revision makes safe against concurrent changes.
func (c *cli) policyApply(ctx context.Context, l *localPolicy, revision string, dryRun, allowDrain bool, wait time.Duration) error {
	var fields []fieldChange
	if revision == "" || dryRun {
		cur, err := c.client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
		if err != nil {
			return err
		}
		if revision == "" {
			revision = cur.GetRevision()
		}
		if dryRun {
			if fields, err = policyDiff(cur.GetPolicy(), l.policy); err != nil {
				return err
			}
		}
	}
	req := &adminv1.ApplyPolicyRequest{Policy: l.policy, ExpectedRevision: revision, DryRun: dryRun, AllowDrain: allowDrain, PolicyYaml: string(l.source)}
	if wait > 0 {
		req.Wait = durationpb.New(wait)
	}
	resp, err := c.client.ApplyPolicy(ctx, req)
	if err != nil {
		return err
	}
	if done, err := c.structured(resp); done {
		if err != nil {
			return err
		}
		return answersError(resp)
	}
	changes := resp.GetChanges()
	sort.SliceStable(changes, func(i, j int) bool { return changes[i].GetType() < changes[j].GetType() })
	if dryRun {
		printFieldChanges(c.out, fields)
	}
	if len(changes) == 0 {
		fmt.Fprintln(c.out, "no changes")
	} else if dryRun {
		fmt.Fprintln(c.out, "Envoy resources:")
	}
	for _, ch := range changes {
		fmt.Fprintf(c.out, "%s %s %s\n", mark(ch.GetAction()), ch.GetType(), ch.GetName())
	}
	printListenerUpdates(c.out, resp.GetListenerUpdates())
	if dryRun {
		fmt.Fprintf(c.out, "dry run: would be revision %s (now %s)\n", resp.GetRevision(), revision)
		if slices.ContainsFunc(resp.GetListenerUpdates(), (*adminv1.ListenerUpdate).GetDrains) {
			fmt.Fprintln(c.out, "applying it needs --allow-drain")
		}
	} else {
		fmt.Fprintf(c.out, "applied: revision %s\n", resp.GetRevision())
		printAnswers(c.out, resp.GetNodes())
	}
	return answersError(resp)
}

// printFieldChanges prints a policy's field-level changes.
func printFieldChanges(out io.Writer, fields []fieldChange) {
	if len(fields) == 0 {
		return
	}
	fmt.Fprintln(out, "policy fields:")
	for _, f := range fields {
		switch f.Action {
		case "+":
			fmt.Fprintf(out, "  + %s: %s\n", f.Path, f.New)
		case "-":
			fmt.Fprintf(out, "  - %s: %s\n", f.Path, f.Old)
		default:
			fmt.Fprintf(out, "  ~ %s: %s -> %s\n", f.Path, f.Old, f.New)
		}
	}
}

func (c *cli) policyHistory(ctx context.Context) error {
	resp, err := c.client.GetPolicyHistory(ctx, &adminv1.GetPolicyHistoryRequest{})
	if err != nil {
		return err
	}
	if done, err := c.structured(resp); done {
		return err
	}
	cur, err := c.client.GetPolicy(ctx, &adminv1.GetPolicyRequest{})
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "REVISION\tAPPLIED\tBY\tROUTES\tBACKENDS\t")
	for _, r := range resp.GetRevisions() {
		mark := ""
		if r.GetRevision() == cur.GetRevision() {
			mark = "(serving)"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%d\t%s\n", r.GetRevision(), r.GetAppliedAt().AsTime().Format(time.RFC3339), r.GetBy(),
			len(r.GetPolicy().GetRoutes()), len(r.GetPolicy().GetBackends()), mark)
	}
	return w.Flush()
}

// policyRollback applies a stored revision again, as an apply on the
// revision served now: a concurrent change makes it fail, not vanish.
func (c *cli) policyRollback(ctx context.Context, to string, allowDrain bool, wait time.Duration) error {
	resp, err := c.client.GetPolicyHistory(ctx, &adminv1.GetPolicyHistoryRequest{})
	if err != nil {
		return err
	}
	var found *adminv1.PolicyRevision
	for _, r := range resp.GetRevisions() {
		if strings.HasPrefix(r.GetRevision(), to) {
			if found != nil && found.GetRevision() != r.GetRevision() {
				return fmt.Errorf("revision %q is ambiguous: give more of it", to)
			}
			found = r
		}
	}
	if found == nil {
		return fmt.Errorf("revision %q is not in the history (dpctl policy history lists it)", to)
	}
	return c.policyApply(ctx, &localPolicy{path: "revision " + found.GetRevision(), policy: found.GetPolicy()}, "", false, allowDrain, wait)
}

func (c *cli) config(ctx context.Context, node, typ string) error {
	resp, err := c.client.GetConfig(ctx, &adminv1.GetConfigRequest{NodeId: node})
	if err != nil {
		return err
	}
	if c.g.output == "yaml" {
		_, err := c.structured(resp)
		return err
	}
	if typ != "" {
		typ, _ = typeName(typ)
	}
	out := map[string]json.RawMessage{}
	for t, js := range resp.GetResourcesJson() {
		if typ == "" || typ == t {
			out[t] = json.RawMessage(js)
		}
	}
	if typ != "" && len(out) == 0 {
		return fmt.Errorf("no resource type %q", typ)
	}
	enc := json.NewEncoder(c.out)
	enc.SetIndent("", "  ")
	return enc.Encode(map[string]any{"node": resp.GetNodeId(), "versions": resp.GetVersions(), "resources": out})
}

func (c *cli) events(ctx context.Context) error {
	stream, err := c.client.WatchEvents(ctx, &adminv1.WatchEventsRequest{})
	if err != nil {
		return err
	}
	for {
		e, err := stream.Recv()
		if errors.Is(err, io.EOF) || ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if done, err := c.structured(e); done {
			if err != nil {
				return err
			}
			continue
		}
		line := fmt.Sprintf("%s  %-14s", e.GetAt().AsTime().Format("15:04:05.000"), e.GetKind())
		for _, kv := range [][2]string{{"node", e.GetNodeId()}, {"type", e.GetType()}, {"version", e.GetVersion()}, {"revision", e.GetRevision()}, {"error", e.GetError()}} {
			if kv[1] != "" {
				line += fmt.Sprintf("  %s=%s", kv[0], kv[1])
			}
		}
		fmt.Fprintln(c.out, line)
	}
}
