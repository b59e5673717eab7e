package dpctl

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	adminv1 "github.com/directpipe/directpipe/api/directpipe/admin/v1"
	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// historyFake adds a stored history to the fake: three revisions, two of
// them sharing a prefix, the newest being served.
type historyFake struct{ *fake }

func (h historyFake) GetPolicyHistory(ctx context.Context, _ *adminv1.GetPolicyHistoryRequest) (*adminv1.GetPolicyHistoryResponse, error) {
	if err := h.auth(ctx); err != nil {
		return nil, err
	}
	at := timestamppb.New(time.Date(2026, 12, 2, 17, 0, 0, 0, time.UTC))
	revision := func(rev, by, addr string) *adminv1.PolicyRevision {
		return &adminv1.PolicyRevision{Revision: rev, AppliedAt: at, By: by, Policy: &policyv1.Policy{
			Listeners: []*policyv1.Listener{{Name: "public", Address: addr}},
		}}
	}
	return &adminv1.GetPolicyHistoryResponse{Revisions: []*adminv1.PolicyRevision{
		revision("rev1", "cp1", "127.0.0.1:10000"),
		revision("abc111", "cp2", "127.0.0.1:10011"),
		revision("abc222", "cp3", "127.0.0.1:10022"),
	}}, nil
}

func TestPolicyHistoryAndRollback(t *testing.T) {
	f := &fake{revision: "rev1"}
	conn := serveFake(t, historyFake{f})

	code, out, errs := run(append(conn, "policy", "history")...)
	if code != 0 {
		t.Fatalf("history: exit %d: %s", code, errs)
	}
	for _, want := range []string{"REVISION", "rev1", "cp1", "(serving)", "abc222", "cp3", "2026-12-02T17:00:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("history output lacks %q:\n%s", want, out)
		}
	}

	tests := []struct {
		name     string
		to       string
		code     int
		want     string // in stdout on success, stderr otherwise
		wantAddr string // the listener address the apply sent
	}{
		{"a unique prefix", "abc2", 0, "applied: revision next", "127.0.0.1:10022"},
		{"a full revision", "abc111", 0, "applied: revision next", "127.0.0.1:10011"},
		{"an ambiguous prefix", "abc", 1, `revision "abc" is ambiguous`, ""},
		{"not in the history", "fff", 1, `revision "fff" is not in the history`, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f.applied = nil
			code, out, errs := run(append(conn, "policy", "rollback", "--to", tc.to)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d: %s%s", code, tc.code, out, errs)
			}
			if got := out + errs; !strings.Contains(got, tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, got)
			}
			if tc.wantAddr == "" {
				if f.applied != nil {
					t.Fatalf("a failed rollback applied %v", f.applied)
				}
				return
			}
			// A rollback is an apply on the revision served now, so a
			// concurrent change makes it fail rather than vanish.
			if f.applied.GetExpectedRevision() != "rev1" || f.applied.GetDryRun() {
				t.Errorf("applied with expected revision %q, dry run %v", f.applied.GetExpectedRevision(), f.applied.GetDryRun())
			}
			if got := f.applied.GetPolicy().GetListeners()[0].GetAddress(); got != tc.wantAddr {
				t.Errorf("rolled back to a policy with %s, want %s", got, tc.wantAddr)
			}
		})
	}
}
