package dpctl

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

func TestPrintListenerUpdates(t *testing.T) {
	var b bytes.Buffer
	printListenerUpdates(&b, []*adminv1.ListenerUpdate{
		{Name: "public", Action: adminv1.ResourceChange_MODIFIED, Address: "127.0.0.1:10000", Drains: true, Connections: map[string]int64{"edge-2": 3, "edge-1": 9}},
		{Name: "tcp-voice", Action: adminv1.ResourceChange_REMOVED, Address: "127.0.0.1:10001", Drains: true, Connections: map[string]int64{"edge-1": 1}},
		{Name: "directpipe-deny", Action: adminv1.ResourceChange_REMOVED, Drains: true},
		{Name: "tcp-new", Action: adminv1.ResourceChange_ADDED},
	})
	want := `listeners this change updates (LDS):
  ~ public (127.0.0.1:10000): drains 12 connections now (edge-1 9, edge-2 3)
  - tcp-voice (127.0.0.1:10001): drains 1 connection now (edge-1 1)
  - directpipe-deny: drains its connections (no node reports how many)
  + tcp-new: new, drains nothing
`
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
	b.Reset()
	printListenerUpdates(&b, nil)
	if b.Len() != 0 {
		t.Errorf("no updates printed %q", b.String())
	}
}

func TestExplainDrainRefusal(t *testing.T) {
	st, err := status.New(codes.FailedPrecondition, "the change updates listeners").WithDetails(&errdetails.ErrorInfo{Reason: drainReason})
	if err != nil {
		t.Fatal(err)
	}
	if got := explain(st.Err(), "x"); !strings.Contains(got, "--allow-drain") || strings.Contains(got, "policy get") {
		t.Errorf("drain refusal explained as %q", got)
	}
	if got := explain(status.Error(codes.FailedPrecondition, "policy changed"), "x"); !strings.Contains(got, "policy get") {
		t.Errorf("stale revision explained as %q", got)
	}
	if got := explain(errors.New("plain"), "x"); got != "plain" {
		t.Errorf("plain error explained as %q", got)
	}
}
