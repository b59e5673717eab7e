package audit

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
)

func TestFetch(t *testing.T) {
	big := strings.Repeat("x", MaxInput+1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/config_dump":
			if r.URL.RawQuery != "include_eds" {
				http.Error(w, "want include_eds", http.StatusBadRequest)
				return
			}
			w.Write([]byte(`{"configs": []}`))
		case "/server_info":
			w.Write([]byte(`{"state": "LIVE"}`))
		case "/stats":
			if strings.Contains(r.Host, "big") {
				w.Write([]byte(big))
				return
			}
			w.Write([]byte(`{"stats": []}`))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	in, err := Fetch(context.Background(), srv.Client(), srv.URL+"/")
	if err != nil {
		t.Fatal(err)
	}
	if string(in.ConfigDump) != `{"configs": []}` || string(in.ServerInfo) != `{"state": "LIVE"}` || string(in.Stats) != `{"stats": []}` {
		t.Errorf("input: %q %q %q", in.ConfigDump, in.ServerInfo, in.Stats)
	}

	bigClient := srv.Client()
	bigClient.Transport = hostRewriter{srv.Client().Transport, "big"}
	if _, err := Fetch(context.Background(), bigClient, srv.URL); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized stats: err = %v", err)
	}
	for _, bad := range []string{"ftp://x", "127.0.0.1:9901", "http://"} {
		if _, err := Fetch(context.Background(), srv.Client(), bad); err == nil {
			t.Errorf("Fetch(%q) succeeded", bad)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Fetch(ctx, srv.Client(), srv.URL); err == nil {
		t.Error("Fetch with a cancelled context succeeded")
	}
}

// hostRewriter sends requests with another Host header.
type hostRewriter struct {
	rt   http.RoundTripper
	host string
}

func (h hostRewriter) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Host = h.host
	return h.rt.RoundTrip(r)
}

// TestFetchUnixSocket: unix:PATH reads the admin interface envoy-bootstrap
// puts on a Unix socket.
func TestFetchUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "admin.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: lis, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"path": "` + r.URL.Path + `"}`))
	})}}
	srv.Start()
	defer srv.Close()
	in, err := Fetch(context.Background(), &http.Client{}, "unix:"+sock)
	if err != nil {
		t.Fatal(err)
	}
	if string(in.ServerInfo) != `{"path": "/server_info"}` {
		t.Errorf("server_info %q", in.ServerInfo)
	}
	if _, err := Fetch(context.Background(), &http.Client{}, "unix:"); err == nil {
		t.Error("unix: without a path was accepted")
	}
}
