package policy

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// logTap is a slog handler that passes each message to a channel.
type logTap struct{ msgs chan string }

func (h logTap) Enabled(context.Context, slog.Level) bool { return true }
func (h logTap) Handle(_ context.Context, r slog.Record) error {
	select {
	case h.msgs <- r.Message:
	default:
	}
	return nil
}
func (h logTap) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h logTap) WithGroup(string) slog.Handler      { return h }

// watched runs watchFile on path and returns the policies it applies and
// the messages it logs.
func watched(t *testing.T, path string, times watchTimes) (<-chan *policyv1.Policy, <-chan string) {
	t.Helper()
	return watchedKnowing(t, path, times, nil)
}

// watchedKnowing is watched with the watcher told which bytes this
// process wrote.
func watchedKnowing(t *testing.T, path string, times watchTimes, known func(FileSum) bool) (<-chan *policyv1.Policy, <-chan string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	applied, msgs := make(chan *policyv1.Policy, 16), make(chan string, 64)
	done := make(chan error, 1)
	go func() {
		done <- watchFile(ctx, path, slog.New(logTap{msgs}), known, func(p *policyv1.Policy) error { applied <- p; return nil }, nil, times)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	for m := range msgs {
		if strings.HasPrefix(m, "watching the policy file") {
			break
		}
	}
	// The watcher reads the file once at start (see watchFile).
	select {
	case <-applied:
	case <-time.After(20 * time.Second):
		t.Fatal("the watcher did not read the file at start")
	}
	return applied, msgs
}

// withBackend renders validPolicy with the voice back end at port.
func withBackend(port string) string {
	return strings.Replace(validPolicy, "127.0.0.1:8081", "127.0.0.1:"+port, 1)
}

func writeAtomically(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func endpoint(p *policyv1.Policy) string { return p.GetBackends()[0].GetEndpoints()[0] }

// waitApplied waits for the watcher to apply a policy with the voice back
// end at want, failing on any other.
func waitApplied(t *testing.T, applied <-chan *policyv1.Policy, want string) {
	t.Helper()
	select {
	case p := <-applied:
		if got := endpoint(p); got != "127.0.0.1:"+want {
			t.Fatalf("applied the back end at %s, want 127.0.0.1:%s", got, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the change to port %s was never applied", want)
	}
}

// TestWatchWaitsForInPlaceWritesToSettle: a file written in place (a
// slow, non-atomic editor) whose prefix is a valid policy is not applied
// while it may still be growing; a rename is applied at once.
func TestWatchWaitsForInPlaceWritesToSettle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomically(t, path, withBackend("1"))
	// The settle interval is an hour: whatever is written in place is never
	// applied in this test, so a write applied without waiting fails it.
	applied, msgs := watched(t, path, watchTimes{debounce: 10 * time.Millisecond, settle: time.Hour})
	full := withBackend("2")
	// What a slow editor may have written so far: everything before the
	// auth policies. Without the route's auth line it is a valid policy,
	// with a public voice route: the very thing not to apply.
	prefix := strings.Replace(full[:strings.Index(full, "auth_policies:")], "    auth: demo\n", "", 1)
	if _, err := Parse([]byte(prefix)); err != nil {
		t.Fatalf("the prefix must be a valid policy for this test: %v", err)
	}
	if err := os.WriteFile(path, []byte(prefix), 0o600); err != nil {
		t.Fatal(err)
	}
	for settling := false; !settling; {
		select {
		case p := <-applied:
			t.Fatalf("a file written in place was applied before it settled: back end %s", endpoint(p))
		case m := <-msgs:
			settling = strings.Contains(m, "waiting for its content to settle")
		case <-time.After(20 * time.Second):
			t.Fatal("the watcher never read the file")
		}
	}
	writeAtomically(t, path, withBackend("3"))
	waitApplied(t, applied, "3")
}

// TestWatchAppliesSettledInPlaceWrites: content written in place is
// applied once two reads a settle interval apart agree.
func TestWatchAppliesSettledInPlaceWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomically(t, path, withBackend("1"))
	applied, _ := watched(t, path, watchTimes{debounce: 10 * time.Millisecond, settle: 20 * time.Millisecond})
	if err := os.WriteFile(path, []byte(withBackend("2")), 0o600); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, applied, "2")
}

// TestWatchFollowsSymlinks: a policy file that is a symlink is watched
// through it: an edit of the target in its own directory, and a
// config-map style swap of a directory link, are both applied.
func TestWatchFollowsSymlinks(t *testing.T) {
	t.Run("target elsewhere", func(t *testing.T) {
		real := filepath.Join(t.TempDir(), "policy.yaml")
		writeAtomically(t, real, withBackend("1"))
		link := filepath.Join(t.TempDir(), "policy.yaml")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		applied, _ := watched(t, link, watchTimes{debounce: 10 * time.Millisecond, settle: 20 * time.Millisecond})
		writeAtomically(t, real, withBackend("2"))
		waitApplied(t, applied, "2")
	})
	t.Run("config map", func(t *testing.T) {
		// mount/policy.yaml -> ..data/policy.yaml, ..data -> ..v1; an update
		// writes ..v2 and renames a new ..data link over the old one.
		mount := t.TempDir()
		for _, v := range []string{"..v1", "..v2"} {
			if err := os.Mkdir(filepath.Join(mount, v), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		writeAtomically(t, filepath.Join(mount, "..v1", "policy.yaml"), withBackend("1"))
		if err := os.Symlink("..v1", filepath.Join(mount, "..data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", "policy.yaml"), filepath.Join(mount, "policy.yaml")); err != nil {
			t.Fatal(err)
		}
		applied, _ := watched(t, filepath.Join(mount, "policy.yaml"), watchTimes{debounce: 10 * time.Millisecond, settle: 20 * time.Millisecond})
		writeAtomically(t, filepath.Join(mount, "..v2", "policy.yaml"), withBackend("2"))
		if err := os.Symlink("..v2", filepath.Join(mount, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(mount, "..data_tmp"), filepath.Join(mount, "..data")); err != nil {
			t.Fatal(err)
		}
		waitApplied(t, applied, "2")
	})
}

// TestWriteFileAtomicKeepsSymlinks: a write through a symlink replaces the
// file it points to and leaves the link a link.
func TestWriteFileAtomicKeepsSymlinks(t *testing.T) {
	real := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomically(t, real, withBackend("1"))
	link := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	p, err := Parse([]byte(withBackend("2")))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(link, p); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Lstat(link); err != nil || info.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", info.Mode(), err)
	}
	got, err := LoadFile(real)
	if err != nil || endpoint(got) != "127.0.0.1:2" {
		t.Fatalf("the target holds %v, %v", got, err)
	}
}

// TestCheckFileServes: an apply may rewrite the file only while it holds
// the served policy.
func TestCheckFileServes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomically(t, path, withBackend("1"))
	served, _ := Parse([]byte(withBackend("1")))
	rev := Revision(served)
	for _, tt := range []struct{ name, content, want string }{
		{"unchanged", withBackend("1"), ""},
		{"reformatted", "# a comment\n" + withBackend("1"), ""},
		{"edited", withBackend("2"), "the policy file was changed since it was last loaded: it holds revision"},
		{"broken", "listeners: [", "and it does not load"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			writeAtomically(t, path, tt.content)
			err := CheckFileServes(path, rev)
			if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
				t.Errorf("CheckFileServes: %v, want %q", err, tt.want)
			}
		})
	}
}

// TestCheckFileKnownBytes: the bytes this process wrote pass without a
// parse, and an edit is still refused when a known sum is given.
func TestCheckFileKnownBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	p1, _ := Parse([]byte(withBackend("1")))
	sum, err := WriteFile(path, p1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := CheckFile(path, Revision(p1), sum); err != nil || got != sum {
		t.Errorf("the file as written: %v (sum %x, want %x)", err, got, sum)
	}
	writeAtomically(t, path, withBackend("2"))
	if _, err := CheckFile(path, Revision(p1), sum); !errors.Is(err, ErrFileChanged) {
		t.Errorf("an edit with the written file's sum known: %v, want ErrFileChanged", err)
	}
	// Reformatted, the served policy still passes, by parsing.
	writeAtomically(t, path, "# a comment\n"+withBackend("1"))
	if got, err := CheckFile(path, Revision(p1), sum); err != nil || got == sum {
		t.Errorf("the served policy reformatted: %v (sum %x)", err, got)
	}
}

// TestSettle: the decision alone, event by event.
func TestSettle(t *testing.T) {
	type step struct {
		isRead           bool
		created, written bool   // an event
		read             string // a read, and whether it may be taken
		take             bool
	}
	ev := func(created, written bool) step { return step{created: created, written: written} }
	read := func(content string, take bool) step { return step{isRead: true, read: content, take: take} }
	for _, tt := range []struct {
		name  string
		steps []step
	}{
		{"renamed into place: taken at once", []step{ev(true, false), read("a", true)}},
		{"written in place: taken when two reads agree", []step{ev(false, true), read("a", false), read("a", true)}},
		{"still growing", []step{ev(false, true), read("a", false), read("ab", false), read("ab", true)}},
		{"an event between two equal reads starts over", []step{ev(false, true), read("a", false), ev(false, true), read("a", false), read("a", true)}},
		{"a rename after in-place writes", []step{ev(false, true), read("a", false), ev(true, false), read("b", true)}},
		{"created, then written", []step{ev(true, false), ev(false, true), read("a", false), read("a", true)}},
		{"another file in the directory", []step{ev(false, false), read("a", true)}},
		{"an empty file written in place", []step{ev(false, true), read("", false), read("", true)}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var s settle
			for i, st := range tt.steps {
				if !st.isRead {
					s.event(st.created, st.written)
					continue
				}
				if got := s.stable([]byte(st.read)); got != st.take {
					t.Fatalf("step %d: read %q taken %v, want %v", i, st.read, got, st.take)
				}
			}
		})
	}
}

// TestWatchReadsAtStart: an edit made after the file was loaded and before
// the watcher started is applied, not lost until the next edit.
func TestWatchReadsAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomically(t, path, withBackend("1"))
	if _, err := LoadFile(path); err != nil { // what the control plane serves
		t.Fatal(err)
	}
	writeAtomically(t, path, withBackend("2")) // the edit in between
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applied := make(chan *policyv1.Policy, 1)
	go watchFile(ctx, path, slog.New(logTap{make(chan string)}), nil, func(p *policyv1.Policy) error { applied <- p; return nil }, nil,
		watchTimes{debounce: 10 * time.Millisecond, settle: 20 * time.Millisecond})
	waitApplied(t, applied, "2")
}

// TestWatchSkipsWhatThisProcessWrote: bytes the process wrote itself (an
// admin API apply, which serves them) are not parsed and applied again;
// an edit after them is.
func TestWatchSkipsWhatThisProcessWrote(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	writeAtomically(t, path, withBackend("8081"))
	ours := withBackend("8082")
	applied, msgs := watchedKnowing(t, path, watchTimes{debounce: 10 * time.Millisecond, settle: 50 * time.Millisecond},
		func(sum FileSum) bool { return sum == sha256.Sum256([]byte(ours)) })
	writeAtomically(t, path, ours)
	for skipped := false; !skipped; {
		select {
		case m := <-msgs:
			skipped = strings.HasPrefix(m, "policy file holds what this process wrote")
		case p := <-applied:
			t.Fatalf("the watcher applied what this process wrote (%s)", endpoint(p))
		case <-time.After(20 * time.Second):
			t.Fatal("the watcher never read the written file")
		}
	}
	writeAtomically(t, path, withBackend("8083"))
	waitApplied(t, applied, "8083")
}
