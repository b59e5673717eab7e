package dpctl

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/status"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// drainReason is the ErrorInfo reason of an apply refused because it would
// drain listeners.
const drainReason = "WOULD_DRAIN_LISTENERS"

// printListenerUpdates says which listeners a change updates and what each
// costs: the live connections a drained listener holds, node by node.
func printListenerUpdates(out io.Writer, updates []*adminv1.ListenerUpdate) {
	if len(updates) == 0 {
		return
	}
	fmt.Fprintln(out, "listeners this change updates (LDS):")
	for _, u := range updates {
		fmt.Fprintf(out, "  %s %s%s: %s\n", mark(u.GetAction()), u.GetName(), at(u.GetAddress()), cost(u))
	}
}

func at(address string) string {
	if address == "" {
		return ""
	}
	return " (" + address + ")"
}

func cost(u *adminv1.ListenerUpdate) string {
	if !u.GetDrains() {
		return "new, drains nothing"
	}
	conns := u.GetConnections()
	if len(conns) == 0 {
		return "drains its connections (no node reports how many)"
	}
	nodes := make([]string, 0, len(conns))
	var total int64
	for n, c := range conns {
		nodes = append(nodes, fmt.Sprintf("%s %d", n, c))
		total += c
	}
	sort.Strings(nodes)
	return fmt.Sprintf("drains %s now (%s)", connections(total), strings.Join(nodes, ", "))
}

func connections(n int64) string {
	if n == 1 {
		return "1 connection"
	}
	return fmt.Sprintf("%d connections", n)
}

func mark(a adminv1.ResourceChange_Action) string {
	return map[adminv1.ResourceChange_Action]string{
		adminv1.ResourceChange_ADDED: "+", adminv1.ResourceChange_MODIFIED: "~", adminv1.ResourceChange_REMOVED: "-",
	}[a]
}

// wouldDrain reports whether err is an apply refused for draining
// listeners.
func wouldDrain(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == drainReason {
			return true
		}
	}
	return false
}
