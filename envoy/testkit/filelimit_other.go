//go:build !unix

package testkit

// RaiseFileLimit: Envoy and its tests run on unix systems only.
func RaiseFileLimit(t T, n uint64) {
	t.Helper()
	t.Fatalf("raising the open-file limit to %d needs a unix system", n)
}
