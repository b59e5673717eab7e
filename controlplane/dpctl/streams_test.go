package dpctl

import (
	"bytes"
	"flag"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
)

func TestParseInterleaved(t *testing.T) {
	for _, tt := range []struct {
		args []string
		pos  []string
		wait bool
	}{
		{[]string{"voice", "127.0.0.1:1"}, []string{"voice", "127.0.0.1:1"}, false},
		{[]string{"--wait", "voice", "127.0.0.1:1"}, []string{"voice", "127.0.0.1:1"}, true},
		{[]string{"voice", "--wait", "127.0.0.1:1"}, []string{"voice", "127.0.0.1:1"}, true},
		{[]string{"voice", "127.0.0.1:1", "--wait"}, []string{"voice", "127.0.0.1:1"}, true},
	} {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		wait := fs.Bool("wait", false, "")
		pos, err := parseInterleaved(fs, tt.args)
		if err != nil || !slices.Equal(pos, tt.pos) || *wait != tt.wait {
			t.Errorf("%v: %v %v wait=%v, want %v wait=%v", tt.args, pos, err, *wait, tt.pos, tt.wait)
		}
	}
}

func TestPrintStreams(t *testing.T) {
	var b bytes.Buffer
	printStreams(&b, &adminv1.ListStreamsResponse{
		Streams: []*adminv1.EndpointStreams{
			{Backend: "voice", Endpoint: "10.0.0.2:80", Node: "edge-2", Live: 4},
			{Backend: "voice", Endpoint: "10.0.0.1:80", Node: "edge-2", Live: 3},
			{Backend: "voice", Endpoint: "10.0.0.1:80", Node: "edge-1", Live: 2},
			{Backend: "voice", Route: "agent", Endpoint: "10.0.0.1:80", Node: "edge-1", Live: 1},
		},
		Drains: []*adminv1.Drain{
			{Backend: "voice", Endpoint: "10.0.0.3:80", State: adminv1.DrainState_DRAINED, EndedBy: "no_streams",
				Started: timestamppb.Now(), Deadline: timestamppb.New(time.Now().Add(time.Minute))},
		},
		ReportingNodes: []string{"edge-1", "edge-2"},
		Identities: []*adminv1.IdentityStreams{
			{Policy: "demo", Identity: "alice", Live: 5, Quota: 4, Nodes: map[string]uint64{"edge-1": 4, "edge-2": 1}},
			{Policy: "demo", Identity: "internal", Live: 2, Nodes: map[string]uint64{"edge-2": 2}},
			{Other: true, Live: 3, Nodes: map[string]uint64{"edge-1": 3}},
		},
	})
	want := `BACKEND  ROUTE  ENDPOINT     LIVE  DRAIN                 NODES
voice    -      10.0.0.1:80  5     -                     edge-1 2, edge-2 3
voice    -      10.0.0.2:80  4     -                     edge-2 4
voice    -      10.0.0.3:80  0     drained (no streams)  -
voice    agent  10.0.0.1:80  1     -                     edge-1 1
10 live streams, counted by 2 reporting Envoys

IDENTITY  POLICY  LIVE  QUOTA  NODES
alice     demo    5     4      edge-1 4, edge-2 1
internal  demo    2     -      edge-2 2
(others)  -       3     -      edge-1 3
`
	if got := b.String(); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}
