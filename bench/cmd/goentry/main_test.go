//go:build linux

package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestDriverMeasuresEveryCase builds the library and the driver and runs
// every kind of case briefly: the command must keep working, whatever it
// measures.
func TestDriverMeasuresEveryCase(t *testing.T) {
	if _, err := exec.LookPath("cc"); err != nil {
		t.Fatal("the native build needs a C compiler (cc), and so does this command")
	}
	driver, err := build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cases := []measurement{
		{name: "C"},
		{name: "Go", inGo: true},
		{name: "Go spaced", inGo: true, gap: 100 * time.Microsecond},
		{name: "Go with work", inGo: true, work: 2},
	}
	for i := range cases {
		if err := run(driver, 2, 100, &cases[i]); err != nil {
			t.Fatal(err)
		}
		if m := cases[i]; m.p50 <= 0 || m.p50 > m.p90 || m.p90 > m.p99 {
			t.Errorf("%s: percentiles %v %v %v", m.name, m.p50, m.p90, m.p99)
		}
	}
	var out bytes.Buffer
	report(&out, cases, 2, 100)
	if rows := strings.Count(out.String(), "\n| "); rows != len(cases)+1 {
		t.Errorf("report has %d table rows, want %d:\n%s", rows, len(cases)+1, out.String())
	}
}
