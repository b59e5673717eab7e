package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
)

// MaxInput bounds every document the audit reads: a config dump, stats, a
// Wasm module. Large fleets' dumps run to tens of megabytes.
const MaxInput = 64 << 20

// Fetch reads /config_dump (with endpoints), /server_info and /stats from
// an Envoy's admin interface: http(s)://host:port, or unix:PATH for the
// Unix socket envoy-bootstrap puts it on. ctx bounds the time; each body
// is bounded by MaxInput.
func Fetch(ctx context.Context, client *http.Client, adminURL string) (Input, error) {
	if path, ok := strings.CutPrefix(adminURL, "unix:"); ok {
		if path == "" {
			return Input{}, fmt.Errorf("admin URL %q: want unix:PATH", adminURL)
		}
		client, adminURL = overSocket(client, path), "http://envoy-admin"
	}
	base, err := url.Parse(strings.TrimRight(adminURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return Input{}, fmt.Errorf("admin URL %q: want http://host:port", adminURL)
	}
	var in Input
	for _, doc := range []struct {
		path string
		dst  *[]byte
	}{
		{"/config_dump?include_eds", &in.ConfigDump},
		{"/server_info", &in.ServerInfo},
		{"/stats?format=json", &in.Stats},
	} {
		if *doc.dst, err = get(ctx, client, base.String()+doc.path); err != nil {
			return Input{}, err
		}
	}
	return in, nil
}

// overSocket is client with every connection dialled to the Unix socket
// at path.
func overSocket(client *http.Client, path string) *http.Client {
	c := *client
	c.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &c
}

func get(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	b, err := readBounded(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.200s", u, resp.Status, b)
	}
	return b, nil
}

var errTooLarge = fmt.Errorf("larger than %d MiB", MaxInput>>20)

func readBounded(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxInput {
		return nil, errTooLarge
	}
	return b, nil
}

// ReadFile reads a file of at most MaxInput bytes; it is the ReadFile of an
// Input that should read Wasm modules from this machine.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	b, err := readBounded(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
