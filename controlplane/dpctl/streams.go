package dpctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// maxDrainWait bounds --wait: a drain's deadline is at most a day.
const maxDrainWait = 24*time.Hour + time.Minute

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, usageError{msg: err.Error()}
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// streamsCmd is `dpctl top` (or `dpctl streams`): live streams per back
// end, route and endpoint over the fleet, each with its nodes.
func streamsCmd(ctx context.Context, g *globals, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpctl top", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	var backend string
	fs.StringVar(&backend, "backend", "", "only this back end")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError{msg: fmt.Sprintf("unexpected argument %q", pos[0])}
	}
	client, closeConn, err := dial(g)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	resp, err := client.ListStreams(ctx, &adminv1.ListStreamsRequest{Backend: backend})
	if err != nil {
		return err
	}
	c := &cli{client: client, g: g, out: out}
	if done, err := c.structured(resp); done {
		return err
	}
	printStreams(out, resp)
	return nil
}

// endpointRow is one back end, route and endpoint with its live streams.
type endpointRow struct {
	backend, route, endpoint string
	live                     uint64
	nodes                    map[string]uint64
	drain                    *adminv1.Drain
}

func printStreams(out io.Writer, resp *adminv1.ListStreamsResponse) {
	rows := map[[3]string]*endpointRow{}
	row := func(b, r, e string) *endpointRow {
		k := [3]string{b, r, e}
		if rows[k] == nil {
			rows[k] = &endpointRow{backend: b, route: r, endpoint: e, nodes: map[string]uint64{}}
		}
		return rows[k]
	}
	for _, s := range resp.GetStreams() {
		r := row(s.GetBackend(), s.GetRoute(), s.GetEndpoint())
		r.live += s.GetLive()
		r.nodes[s.GetNode()] += s.GetLive()
	}
	for _, d := range resp.GetDrains() {
		row(d.GetBackend(), "", d.GetEndpoint()).drain = d
	}
	list := make([]*endpointRow, 0, len(rows))
	for _, r := range rows {
		list = append(list, r)
	}
	sort.Slice(list, func(i, j int) bool {
		a, b := list[i], list[j]
		return a.backend+"\x00"+a.route+"\x00"+a.endpoint < b.backend+"\x00"+b.route+"\x00"+b.endpoint
	})
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "BACKEND\tROUTE\tENDPOINT\tLIVE\tDRAIN\tNODES")
	var total uint64
	for _, r := range list {
		total += r.live
		route := r.route
		if route == "" {
			route = "-"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%s\t%s\n", r.backend, route, r.endpoint, r.live, drainCell(r.drain), nodesCell(r.nodes))
	}
	w.Flush()
	fmt.Fprintf(out, "%d live streams, counted by %d reporting Envoys\n", total, len(resp.GetReportingNodes()))
	printIdentities(out, resp.GetIdentities())
}

// printIdentities lists the live streams of identities under a quota,
// in the order the control plane gives them (most first, then the row
// adding up the rest).
func printIdentities(out io.Writer, ids []*adminv1.IdentityStreams) {
	if len(ids) == 0 {
		return
	}
	fmt.Fprintln(out)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "IDENTITY\tPOLICY\tLIVE\tQUOTA\tNODES")
	for _, r := range ids {
		id, policy, quota := r.GetIdentity(), r.GetPolicy(), "-"
		if r.GetOther() {
			id, policy = "(others)", "-"
		} else if r.GetQuota() > 0 {
			quota = fmt.Sprint(r.GetQuota())
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\n", id, policy, r.GetLive(), quota, nodesCell(r.GetNodes()))
	}
	w.Flush()
}

func drainCell(d *adminv1.Drain) string {
	switch d.GetState() {
	case adminv1.DrainState_DRAINING:
		return "draining, deadline in " + time.Until(d.GetDeadline().AsTime()).Round(time.Second).String()
	case adminv1.DrainState_DRAINED:
		return "drained (" + strings.ReplaceAll(d.GetEndedBy(), "_", " ") + ")"
	}
	return "-"
}

func nodesCell(nodes map[string]uint64) string {
	if len(nodes) == 0 {
		return "-"
	}
	names := make([]string, 0, len(nodes))
	for n := range nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, n := range names {
		parts = append(parts, fmt.Sprintf("%s %d", n, nodes[n]))
	}
	return strings.Join(parts, ", ")
}

// drainCmd is `dpctl drain BACKEND ENDPOINT [--deadline D] [--wait]
// [--cancel]`.
func drainCmd(ctx context.Context, g *globals, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpctl drain", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	var deadline time.Duration
	var wait, cancelDrain bool
	fs.DurationVar(&deadline, "deadline", 0, "take the endpoint out of EDS this long after the start even if streams are left (default 10m, at most 24h)")
	fs.BoolVar(&wait, "wait", false, "show the fleet-wide count falling until the endpoint leaves EDS")
	fs.BoolVar(&cancelDrain, "cancel", false, "end the drain: the endpoint takes new streams again")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return usageError{msg: "drain needs BACKEND ENDPOINT"}
	}
	if deadline < 0 || deadline > 24*time.Hour {
		return usageError{msg: fmt.Sprintf("--deadline %s: want up to 24h", deadline)}
	}
	client, closeConn, err := dial(g)
	if err != nil {
		return err
	}
	defer closeConn()
	callCtx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	req := &adminv1.DrainEndpointRequest{Backend: pos[0], Endpoint: pos[1], Cancel: cancelDrain}
	if deadline > 0 {
		req.Deadline = durationpb.New(deadline)
	}
	resp, err := client.DrainEndpoint(callCtx, req)
	if err != nil {
		return err
	}
	c := &cli{client: client, g: g, out: out}
	if done, err := c.structured(resp); done || err != nil {
		return err
	}
	d := resp.GetDrain()
	if cancelDrain {
		fmt.Fprintf(out, "drain of %s %s cancelled: it takes new streams again\n", pos[0], pos[1])
		return nil
	}
	fmt.Fprintf(out, "draining %s %s: %d live streams, out of EDS at 0 or at %s\n",
		d.GetBackend(), d.GetEndpoint(), d.GetLive(), d.GetDeadline().AsTime().Local().Format(time.TimeOnly))
	if !wait {
		return nil
	}
	return waitDrain(ctx, client, d, out)
}

// waitDrain prints the fleet-wide count each time it changes until the
// endpoint leaves EDS.
func waitDrain(ctx context.Context, client adminv1.AdminServiceClient, d *adminv1.Drain, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, min(time.Until(d.GetDeadline().AsTime())+time.Minute, maxDrainWait))
	defer cancel()
	last := d.GetLive()
	// The count while the endpoint was still in EDS: once it leaves, load
	// reports no longer cover it.
	counted := last
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the drain: %w", ctx.Err())
		case <-tick.C:
		}
		resp, err := client.ListStreams(ctx, &adminv1.ListStreamsRequest{Backend: d.GetBackend()})
		if err != nil {
			return err
		}
		var now *adminv1.Drain
		for _, x := range resp.GetDrains() {
			if x.GetEndpoint() == d.GetEndpoint() {
				now = x
			}
		}
		if now == nil {
			return fmt.Errorf("the drain of %s %s was cancelled", d.GetBackend(), d.GetEndpoint())
		}
		if now.GetState() == adminv1.DrainState_DRAINING {
			counted = now.GetLive()
		}
		if now.GetLive() != last {
			last = now.GetLive()
			fmt.Fprintf(out, "%s live %d\n", time.Now().Format(time.TimeOnly), last)
		}
		if now.GetState() == adminv1.DrainState_DRAINED {
			took := now.GetEnded().AsTime().Sub(now.GetStarted().AsTime()).Round(time.Second)
			if now.GetEndedBy() == "deadline" {
				fmt.Fprintf(out, "drained: out of EDS after %s (deadline), with %d live streams at the last count; "+
					"Envoy does not cut them: they go on, no longer counted, until the back end or the caller ends them\n", took, counted)
				return nil
			}
			fmt.Fprintf(out, "drained: out of EDS after %s (no streams)\n", took)
			return nil
		}
	}
}
