package dpctl

import (
	"fmt"
	"io"
	"strings"
	"time"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

// defaultApplyWait is how long an apply waits for the Envoys' answers
// unless told otherwise: long enough for a fleet to answer a push, short
// enough that a script notices a node that never does.
const defaultApplyWait = 30 * time.Second

// maxApplyWait is the admin API's bound on the wait.
const maxApplyWait = 5 * time.Minute

// printAnswers says how each connected Envoy answered the apply.
func printAnswers(out io.Writer, nodes []*adminv1.NodeAnswer) {
	for _, n := range nodes {
		switch n.GetOutcome() {
		case adminv1.NodeAnswer_ACKED:
			fmt.Fprintf(out, "  %s: ACKed\n", n.GetNodeId())
		case adminv1.NodeAnswer_NACKED:
			for _, nack := range n.GetNacks() {
				fmt.Fprintf(out, "  %s: NACKed %s version %s: %s\n", n.GetNodeId(), nack.GetType(), nack.GetVersion(), nack.GetError())
			}
		case adminv1.NodeAnswer_PENDING:
			fmt.Fprintf(out, "  %s: no answer yet for %s\n", n.GetNodeId(), strings.Join(n.GetPending(), ", "))
		case adminv1.NodeAnswer_DISCONNECTED:
			fmt.Fprintf(out, "  %s: disconnected before answering\n", n.GetNodeId())
		}
	}
}

// answersError is the error an apply ends with when an Envoy rejected it
// or did not answer in time: the policy is applied, but not running
// everywhere. Each NACK is named with Envoy's reason.
func answersError(resp *adminv1.ApplyPolicyResponse) error {
	var nacked, pending []string
	for _, n := range resp.GetNodes() {
		switch n.GetOutcome() {
		case adminv1.NodeAnswer_NACKED:
			for _, nack := range n.GetNacks() {
				nacked = append(nacked, fmt.Sprintf("%s rejected %s: %s", n.GetNodeId(), nack.GetType(), nack.GetError()))
			}
		case adminv1.NodeAnswer_PENDING:
			pending = append(pending, n.GetNodeId())
		}
	}
	switch {
	case len(nacked) > 0:
		return fmt.Errorf("revision %s is applied, but Envoy rejected it: %s", resp.GetRevision(), strings.Join(nacked, "; "))
	case len(pending) > 0:
		return fmt.Errorf("revision %s is applied, but %s did not answer within --wait", resp.GetRevision(), strings.Join(pending, ", "))
	}
	return nil
}
