package modules

import (
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	s := NewStore(Limits{Concurrent: 1, Nodes: 2})
	v1, changed := s.Set("m", []byte("\x00asm v1"))
	if !changed {
		t.Fatal("first module not a change")
	}
	if _, changed := s.Set("m", []byte("\x00asm v1")); changed {
		t.Error("the same bytes counted as a change")
	}
	v2, _ := s.Set("m", []byte("\x00asm v2"))
	v3, _ := s.Set("m", []byte("\x00asm v3"))
	srv := httptest.NewServer(s.Handler(func(r *http.Request) string { return r.Header.Get("X-Node") }))
	defer srv.Close()
	get := func(method, path, node string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		req.Header.Set("X-Node", node)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", Path(v3.SHA256), 200, "\x00asm v3"},
		{"GET", Path(v2.SHA256), 200, "\x00asm v2"}, // the previous module stays
		{"GET", Path(v1.SHA256), 404, ""},           // older ones go
		{"GET", "/modules/" + v3.SHA256, 404, ""},
		{"GET", "/" + v3.SHA256 + ".wasm", 404, ""},
		{"POST", Path(v3.SHA256), 405, ""},
		{"HEAD", Path(v3.SHA256), 200, ""},
	} {
		code, body := get(tc.method, tc.path, "edge-1")
		if code != tc.code || (tc.body != "" && body != tc.body) {
			t.Errorf("%s %s: %d %q, want %d %q", tc.method, tc.path, code, body, tc.code, tc.body)
		}
	}
	f, ok := s.FetchOf("edge-1", v3.SHA256)
	if !ok || f.Complete != 1 || f.Bytes != int64(v3.Size()) {
		t.Errorf("fetch record: %+v", f)
	}
	// Records are bounded: the oldest node is forgotten.
	get("GET", Path(v3.SHA256), "edge-2")
	get("GET", Path(v3.SHA256), "edge-3")
	if len(s.Fetches()) != 2 {
		t.Errorf("%d fetch records kept, limit 2", len(s.Fetches()))
	}
}

func TestLoadRefusesNonModules(t *testing.T) {
	s := NewStore(DefaultLimits)
	if _, _, err := s.Load("m", "modules_test.go"); err == nil {
		t.Error("a Go file loaded as a module")
	}
	if _, _, err := s.Load("m", "missing.wasm"); err == nil {
		t.Error("a missing file loaded")
	}
}

// TestLoadRefusesOtherSharedObjects: a shared object is served only if it
// is an Envoy dynamic module, one that exports the function Envoy calls
// first. libc is a well-formed shared object that does not.
func TestLoadRefusesOtherSharedObjects(t *testing.T) {
	libc, err := filepath.Glob("/usr/lib/*-linux-gnu/libc.so.6")
	if err != nil || len(libc) == 0 {
		t.Fatalf("no libc.so.6 to try: %v", err)
	}
	s := NewStore(DefaultLimits)
	_, _, err = s.Load("native", libc[0])
	if err == nil || !strings.Contains(err.Error(), DynamicModuleEntry) {
		t.Errorf("libc loaded as a dynamic module: %v", err)
	}
	if _, ok := s.Current("native"); ok {
		t.Error("a refused file became the current module")
	}
}
