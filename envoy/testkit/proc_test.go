package testkit

import (
	"os"
	"testing"
)

func TestProcSelf(t *testing.T) {
	if cpu, err := procCPU(os.Getpid()); err != nil || cpu < 0 {
		t.Errorf("procCPU = %v, %v", cpu, err)
	}
	if rss, err := procRSS(os.Getpid()); err != nil || rss <= 0 {
		t.Errorf("procRSS = %v, %v", rss, err)
	}
}

func TestEnvoyBinaryIsFound(t *testing.T) {
	// make test installs Envoy before running tests; a missing one fails.
	if _, err := EnvoyBinary(); err != nil {
		t.Fatal(err)
	}
}
