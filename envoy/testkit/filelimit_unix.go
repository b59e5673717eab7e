//go:build unix

package testkit

import "syscall"

// RaiseFileLimit makes room for n open files in this process and in the
// processes it starts (Envoy, replicas). The limit is set explicitly even
// when Go already raised the soft limit at start: Go hands child processes
// back the limit it found unless the program sets one itself. Fails loudly
// when even the hard limit is too low.
func RaiseFileLimit(t T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("read the open-file limit: %v", err)
	}
	if lim.Max < n {
		t.Fatalf("this test needs %d open files; the hard limit is %d (raise it with ulimit -Hn)", n, lim.Max)
	}
	lim.Cur = max(lim.Cur, n)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatalf("raise the open-file limit to %d: %v", n, err)
	}
}
