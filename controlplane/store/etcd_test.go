//go:build !wasip1

package store_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
	"github.com/directpipe/directpipe/controlplane/policy"
	"github.com/directpipe/directpipe/controlplane/store"
	"github.com/directpipe/directpipe/envoy/testkit"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newStore(t *testing.T, endpoints, prefix, replica string, history int) *store.Etcd {
	t.Helper()
	eps, err := store.ParseURL("etcd://" + endpoints)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := store.NewEtcd(store.EtcdConfig{Endpoints: eps, Prefix: prefix, Replica: replica, History: history, Log: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	s := shared.(*store.Etcd)
	t.Cleanup(func() { s.Close() })
	return s
}

// policyN is a small valid policy that differs by n.
func policyN(n int) *policyv1.Policy {
	return &policyv1.Policy{
		Listeners: []*policyv1.Listener{{Name: "public", Address: "127.0.0.1:10000"}},
		Routes:    []*policyv1.Route{{Name: "api", Match: &policyv1.RouteMatch{Prefix: "/"}, Kind: "http", Backend: "b"}},
		Backends:  []*policyv1.Backend{{Name: "b", Endpoints: []string{"127.0.0.1:" + itoa(8000+n)}}},
	}
}

func itoa(n int) string {
	b := []byte{}
	for n > 0 || len(b) == 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		bad  bool
	}{
		{in: "etcd://127.0.0.1:2379", want: 1},
		{in: "etcd://a:1,b:2, c:3", want: 3},
		{in: "http://a:1", bad: true},
		{in: "etcd://", bad: true},
		{in: "etcd://a", bad: true},
		{in: "etcd://user@a:1", bad: true},
		{in: "etcd://a:1/path", bad: true},
	} {
		eps, err := store.ParseURL(tc.in)
		if (err != nil) != tc.bad || len(eps) != tc.want {
			t.Errorf("ParseURL(%q) = %v, %v", tc.in, eps, err)
		}
	}
}

// One etcd serves every store test, each under its own prefix.
func TestEtcdStore(t *testing.T) {
	cluster := testkit.StartEtcd(t, 1)
	ctx := t.Context()

	t.Run("empty, then put with compare", func(t *testing.T) {
		s := newStore(t, cluster.Endpoints(), "/t1/", "a", 3)
		if _, _, err := s.Load(ctx); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Load on an empty store: %v, want ErrNotFound", err)
		}
		rev1, err := s.Put(ctx, policyN(1), "")
		if err != nil {
			t.Fatal(err)
		}
		if rev1 != policy.Revision(policyN(1)) {
			t.Fatalf("revision %s, want the content revision", rev1)
		}
		if _, err := s.Put(ctx, policyN(2), ""); !errors.Is(err, store.ErrStale) {
			t.Fatalf("a second first put: %v, want ErrStale", err)
		}
		if _, err := s.Put(ctx, policyN(2), "0123456789abcdef"); !errors.Is(err, store.ErrStale) {
			t.Fatalf("put on a wrong revision: %v, want ErrStale", err)
		}
		rev2, err := s.Put(ctx, policyN(2), rev1)
		if err != nil {
			t.Fatal(err)
		}
		p, rev, err := s.Load(ctx)
		if err != nil || rev != rev2 || policy.Revision(p) != rev2 {
			t.Fatalf("Load = %v, %s, want %s", err, rev, rev2)
		}
	})

	t.Run("the text as written is kept with its revision only", func(t *testing.T) {
		s := newStore(t, cluster.Endpoints(), "/t-source/", "a", 3)
		text := []byte("# written by hand\nlisteners: []  # kept\n")
		rev1, err := s.PutSource(ctx, policyN(1), text, "")
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := s.Source(ctx, rev1); !ok || string(got) != string(text) {
			t.Fatalf("Source(%s) = %q, %v; want the text", rev1, got, ok)
		}
		// A put without text (a rollback, a seed) drops the old text: it
		// would describe another policy.
		rev2, err := s.Put(ctx, policyN(2), rev1)
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := s.Source(ctx, rev2); ok {
			t.Fatalf("Source(%s) = %q after a put without text", rev2, got)
		}
		if _, ok := s.Source(ctx, rev1); ok {
			t.Fatal("Source returned text for a revision no longer stored")
		}
	})

	t.Run("concurrent puts on one revision: exactly one wins", func(t *testing.T) {
		a := newStore(t, cluster.Endpoints(), "/t2/", "a", 3)
		b := newStore(t, cluster.Endpoints(), "/t2/", "b", 3)
		base, err := a.Put(ctx, policyN(1), "")
		if err != nil {
			t.Fatal(err)
		}
		for round := range 10 {
			var wg sync.WaitGroup
			errs := make([]error, 2)
			revs := make([]string, 2)
			for i, s := range []*store.Etcd{a, b} {
				wg.Go(func() { revs[i], errs[i] = s.Put(ctx, policyN(100+2*round+i), base) })
			}
			wg.Wait()
			wins := 0
			for i, err := range errs {
				switch {
				case err == nil:
					wins++
					base = revs[i]
				case !errors.Is(err, store.ErrStale):
					t.Fatalf("round %d: %v", round, err)
				}
			}
			if wins != 1 {
				t.Fatalf("round %d: %d puts won, want 1 (%v)", round, wins, errs)
			}
		}
	})

	t.Run("history keeps the newest N", func(t *testing.T) {
		s := newStore(t, cluster.Endpoints(), "/t3/", "a", 3)
		prev := ""
		var revs []string
		for i := range 5 {
			rev, err := s.Put(ctx, policyN(i), prev)
			if err != nil {
				t.Fatal(err)
			}
			revs, prev = append(revs, rev), rev
		}
		h, err := s.History(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 3 {
			t.Fatalf("%d history entries, want 3", len(h))
		}
		for i, e := range h {
			if want := revs[4-i]; e.Revision != want || policy.Revision(e.Policy) != want || e.By != "a" {
				t.Errorf("history[%d] = %s by %s, want %s by a", i, e.Revision, e.By, want)
			}
		}
	})

	t.Run("watch delivers the current policy, then every change", func(t *testing.T) {
		s := newStore(t, cluster.Endpoints(), "/t4/", "a", 3)
		rev, err := s.Put(ctx, policyN(1), "")
		if err != nil {
			t.Fatal(err)
		}
		got := watch(t, s)
		expect(t, got, rev)
		for i := 2; i < 5; i++ {
			if rev, err = s.Put(ctx, policyN(i), rev); err != nil {
				t.Fatal(err)
			}
			expect(t, got, rev)
		}
	})

	t.Run("watch re-reads after a compaction", func(t *testing.T) {
		s := newStore(t, cluster.Endpoints(), "/t5/", "a", 3)
		rev, err := s.Put(ctx, policyN(1), "")
		if err != nil {
			t.Fatal(err)
		}
		// A watch that starts behind a compaction: puts and a compaction
		// happen between the store's read and its watch, which the test
		// forces by compacting past the revision before the watch begins.
		var last string
		for i := 2; i < 6; i++ {
			if last, err = s.Put(ctx, policyN(i), rev); err != nil {
				t.Fatal(err)
			}
			rev = last
		}
		resp, err := s.Client().Get(ctx, "/t5/policy")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client().Compact(ctx, resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
		got := watch(t, s)
		expect(t, got, last)
		if rev, err = s.Put(ctx, policyN(9), rev); err != nil {
			t.Fatal(err)
		}
		expect(t, got, rev)
	})

	t.Run("a stored value that is not a valid policy is skipped", func(t *testing.T) {
		s := newStore(t, cluster.Endpoints(), "/t6/", "a", 3)
		rev, err := s.Put(ctx, policyN(1), "")
		if err != nil {
			t.Fatal(err)
		}
		got := watch(t, s)
		expect(t, got, rev)
		if _, err := s.Client().Put(ctx, "/t6/policy", "\xff\xff not protobuf"); err != nil {
			t.Fatal(err)
		}
		if rev, err = s.Put(ctx, policyN(2), rev); err != nil {
			t.Fatal(err)
		}
		expect(t, got, rev)
	})
}

// An unreachable etcd refuses puts within the operation timeout, with
// ErrUnavailable.
func TestEtcdStoreUnreachable(t *testing.T) {
	port := testkit.FreePort(t)
	s := newStore(t, "127.0.0.1:"+itoa(port), "/x/", "a", 3)
	_, err := s.Put(t.Context(), policyN(1), "")
	if !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("put to a dead etcd: %v, want ErrUnavailable", err)
	}
	if _, _, err := s.Load(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("load from a dead etcd: %v, want ErrUnavailable", err)
	}
}

// watch runs s.Watch until the test ends and sends each revision it
// delivers.
func watch(t *testing.T, s store.Store) <-chan string {
	got := make(chan string, 10)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	go s.Watch(ctx, func(p *policyv1.Policy) error { got <- policy.Revision(p); return nil })
	return got
}

func expect(t *testing.T, got <-chan string, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case rev := <-got:
			if rev == want {
				return
			}
		case <-timeout:
			t.Fatalf("watch never delivered revision %s", want)
		}
	}
}

// TestPublishNodesInBatches: records are written and removed in
// transactions of many records each; more records than one transaction
// holds all land, changed ones are rewritten and gone ones removed.
func TestPublishNodesInBatches(t *testing.T) {
	e := testkit.StartEtcd(t, 1)
	s := newStore(t, e.Endpoints(), "/batches/", "cp1", 10)
	ctx := context.Background()
	records := func(n int, tag string) map[string][]byte {
		out := map[string][]byte{}
		for i := range n {
			out["node-"+itoa(i)] = []byte(tag + "-" + itoa(i))
		}
		return out
	}
	for _, step := range []struct {
		name  string
		nodes map[string][]byte
	}{
		{"first 350", records(350, "a")},
		{"the same again", records(350, "a")},
		{"120 changed, the rest gone", records(120, "b")},
		{"none", map[string][]byte{}},
	} {
		if err := s.PublishNodes(ctx, step.nodes); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		recs, err := s.Nodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != len(step.nodes) {
			t.Fatalf("%s: %d records in etcd, want %d", step.name, len(recs), len(step.nodes))
		}
		for _, r := range recs {
			if want := step.nodes[r.Node]; r.Replica != "cp1" || string(r.Value) != string(want) {
				t.Errorf("%s: %s/%s holds %q, want %q", step.name, r.Replica, r.Node, r.Value, want)
			}
		}
	}
}
