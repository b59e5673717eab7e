package main

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestPerChunkHooksNeverEnterGo builds the library and reads its dynamic
// symbols: the hooks Envoy calls for every chunk of a stream (the body
// hooks) and the others with no work are a few bytes of C that return
// Continue, not cgo export wrappers, so a WebSocket frame costs Envoy a
// function call and never a call into the Go runtime; the network
// filter's read hook is C too, entering Go only before a connection's
// handshake is decided. It also lists what the library exports to Envoy:
// the HTTP and network filter hooks Envoy 1.40 requires, and nothing else.
func TestPerChunkHooksNeverEnterGo(t *testing.T) {
	lib := filepath.Join(t.TempDir(), "libdirectpipe_native.so")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-buildmode=c-shared", "-o", lib, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := elf.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	size := map[string]uint64{}
	var hooks []string
	for _, s := range syms {
		if s.Section != elf.SHN_UNDEF && strings.HasPrefix(s.Name, "envoy_dynamic_module_on_") {
			size[s.Name] = s.Size
			hooks = append(hooks, strings.TrimPrefix(s.Name, "envoy_dynamic_module_on_"))
		}
	}
	slices.Sort(hooks)
	want := []string{
		"http_filter_config_destroy", "http_filter_config_new", "http_filter_destroy",
		"http_filter_downstream_above_write_buffer_high_watermark", "http_filter_downstream_below_write_buffer_low_watermark",
		"http_filter_http_callout_done", "http_filter_http_stream_complete", "http_filter_http_stream_data",
		"http_filter_http_stream_headers", "http_filter_http_stream_reset", "http_filter_http_stream_trailers",
		"http_filter_new", "http_filter_request_body", "http_filter_request_headers", "http_filter_request_trailers",
		"http_filter_response_body", "http_filter_response_headers", "http_filter_response_trailers",
		"http_filter_scheduled", "http_filter_stream_complete",
		"network_filter_above_write_buffer_high_watermark", "network_filter_below_write_buffer_low_watermark",
		"network_filter_config_destroy", "network_filter_config_new", "network_filter_config_scheduled",
		"network_filter_destroy", "network_filter_event", "network_filter_http_callout_done", "network_filter_new",
		"network_filter_new_connection", "network_filter_read", "network_filter_scheduled", "network_filter_write",
		"program_init",
	}
	if !slices.Equal(hooks, want) {
		t.Errorf("exported hooks:\n%v\nwant:\n%v", hooks, want)
	}
	// Go's cgo export wrappers are tens of bytes and call into the
	// runtime; "return 0" in C is a handful.
	for _, h := range []string{"http_filter_request_body", "http_filter_response_body", "http_filter_request_trailers",
		"http_filter_response_trailers", "http_filter_response_headers", "http_filter_stream_complete",
		"network_filter_write", "network_filter_event"} {
		if n := size["envoy_dynamic_module_on_"+h]; n == 0 || n > 16 {
			t.Errorf("%s is %d bytes: it should be C that returns at once", h, n)
		}
	}
	// The network read hook is C that tests the connection's decided
	// flag and enters Go only before the decision: a load, a branch and
	// a jump, and no cgo export wrapper of that name.
	if n := size["envoy_dynamic_module_on_network_filter_read"]; n == 0 || n > 32 {
		t.Errorf("network_filter_read is %d bytes: it should be C that tests a flag", n)
	}
	all, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	// An HTTP stream's creation and destruction are C too, and so is
	// request_headers, which replays a stored verdict (verdict.c) and
	// otherwise enters Go once, in the check dp_go_http_request_headers.
	goCheck := false
	for _, s := range all {
		for _, h := range []string{"network_filter_read", "http_filter_new", "http_filter_destroy", "http_filter_request_headers"} {
			if strings.HasPrefix(s.Name, "_cgoexp_") && strings.HasSuffix(s.Name, "_envoy_dynamic_module_on_"+h) {
				t.Errorf("%s: the %s hook is a Go export", s.Name, h)
			}
		}
		if strings.HasPrefix(s.Name, "_cgoexp_") && strings.HasSuffix(s.Name, "_dp_go_http_request_headers") {
			goCheck = true
		}
	}
	if !goCheck {
		t.Error("the handshake check dp_go_http_request_headers is not a Go export")
	}
	if n := size["envoy_dynamic_module_on_http_filter_request_headers"]; n <= 16 {
		t.Errorf("request_headers is %d bytes: it should look the verdict up before entering Go", n)
	}
}
