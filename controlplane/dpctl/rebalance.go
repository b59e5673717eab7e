package dpctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// maxShedWindow is the longest window the control plane takes.
const maxShedWindow = 10 * time.Minute

// rebalanceCmd is `dpctl rebalance BACKEND [--dry-run] [--window D]`.
func rebalanceCmd(ctx context.Context, g *globals, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("dpctl rebalance", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	var window time.Duration
	var dryRun bool
	fs.DurationVar(&window, "window", 0, "the back ends spread their closes over this window (default 10s, at most 10m)")
	fs.BoolVar(&dryRun, "dry-run", false, "show the plan; ask no back end")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{msg: "rebalance needs BACKEND"}
	}
	if window < 0 || window > maxShedWindow {
		return usageError{msg: fmt.Sprintf("--window %s: want up to %s", window, maxShedWindow)}
	}
	client, closeConn, err := dial(g)
	if err != nil {
		return err
	}
	defer closeConn()
	callCtx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	req := &adminv1.RebalanceRequest{Backend: pos[0], DryRun: dryRun}
	if window > 0 {
		req.Window = durationpb.New(window)
	}
	resp, err := client.Rebalance(callCtx, req)
	if err != nil {
		return err
	}
	c := &cli{client: client, g: g, out: out}
	if done, err := c.structured(resp); done || err != nil {
		return err
	}
	printRebalance(out, resp)
	return nil
}

// printRebalance shows the plan and, once run, what each back end said.
func printRebalance(out io.Writer, resp *adminv1.RebalanceResponse) {
	var live, shed, asked uint64
	for _, st := range resp.GetSteps() {
		live, shed, asked = live+st.GetLive(), shed+st.GetShed(), asked+st.GetAsked()
	}
	fmt.Fprintf(out, "rebalance %s: %d live streams over %d endpoints\n", resp.GetBackend(), live, len(resp.GetSteps()))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tLIVE\tSHED\tASKED")
	for _, st := range resp.GetSteps() {
		result := "-"
		switch {
		case st.GetError() != "":
			result = "failed: " + st.GetError()
		case resp.GetRan() && st.GetShed() > 0:
			result = fmt.Sprint(st.GetAsked())
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", st.GetEndpoint(), st.GetLive(), st.GetShed(), result)
	}
	tw.Flush()
	switch {
	case shed == 0:
		fmt.Fprintln(out, "nothing to shed: no endpoint holds more than its share, rounded up")
	case !resp.GetRan():
		fmt.Fprintf(out, "dry run: %d streams would be ended with Close 1001 over %s; nothing was asked\n", shed, resp.GetWindow().AsDuration())
	default:
		fmt.Fprintf(out, "asked the back ends to end %d streams with Close 1001 over %s; their callers reconnect where the weights send them\n",
			asked, resp.GetWindow().AsDuration())
	}
}
