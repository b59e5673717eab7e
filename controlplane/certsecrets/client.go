package certsecrets

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// serviceAccountDir is where a pod finds its token and the cluster's CA.
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// Client is the Secrets API of namespace: through the kubeconfig file when
// one is named (a token or a client certificate; exec plugins are not
// supported), else the pod's service account.
func Client(kubeconfig, namespace string) (API, error) {
	if namespace == "" || strings.ContainsAny(namespace, "/?#%") {
		return nil, fmt.Errorf("certsecrets: bad namespace %q", namespace)
	}
	var c *restClient
	var err error
	if kubeconfig != "" {
		c, err = fromKubeconfig(kubeconfig)
	} else {
		c, err = inCluster()
	}
	if err != nil {
		return nil, err
	}
	c.base += "/api/v1/namespaces/" + namespace + "/secrets"
	return c, nil
}

type restClient struct {
	base  string
	token string
	hc    *http.Client
}

func inCluster() (*restClient, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("certsecrets: not in a pod (no KUBERNETES_SERVICE_HOST); pass -kubeconfig")
	}
	token, err := os.ReadFile(filepath.Join(serviceAccountDir, "token"))
	if err != nil {
		return nil, fmt.Errorf("certsecrets: service account token: %w", err)
	}
	ca, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("certsecrets: cluster CA: %w", err)
	}
	return newClient("https://"+net.JoinHostPort(host, port), ca, nil, strings.TrimSpace(string(token)))
}

// kubeconfig is the part of a kubeconfig file Client reads.
type kubeconfig struct {
	CurrentContext string `json:"current-context"`
	Contexts       []struct {
		Name    string `json:"name"`
		Context struct {
			Cluster string `json:"cluster"`
			User    string `json:"user"`
		} `json:"context"`
	} `json:"contexts"`
	Clusters []struct {
		Name    string `json:"name"`
		Cluster struct {
			Server   string `json:"server"`
			CAData   []byte `json:"certificate-authority-data"`
			CAFile   string `json:"certificate-authority"`
			Insecure bool   `json:"insecure-skip-tls-verify"`
		} `json:"cluster"`
	} `json:"clusters"`
	Users []struct {
		Name string `json:"name"`
		User struct {
			Token        string          `json:"token"`
			CertData     []byte          `json:"client-certificate-data"`
			KeyData      []byte          `json:"client-key-data"`
			CertFile     string          `json:"client-certificate"`
			KeyFile      string          `json:"client-key"`
			Exec         json.RawMessage `json:"exec"`
			AuthProvider json.RawMessage `json:"auth-provider"`
		} `json:"user"`
	} `json:"users"`
}

// maxKubeconfig bounds the kubeconfig file read.
const maxKubeconfig = 4 << 20

func fromKubeconfig(path string) (*restClient, error) {
	b, err := readBounded(path)
	if err != nil {
		return nil, fmt.Errorf("certsecrets: kubeconfig: %w", err)
	}
	var kc kubeconfig
	if err := yaml.Unmarshal(b, &kc); err != nil {
		return nil, fmt.Errorf("certsecrets: kubeconfig %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	file := func(data []byte, name string) ([]byte, error) {
		if len(data) > 0 || name == "" {
			return data, nil
		}
		if !filepath.IsAbs(name) {
			name = filepath.Join(dir, name)
		}
		return readBounded(name)
	}
	for _, ctx := range kc.Contexts {
		if ctx.Name != kc.CurrentContext {
			continue
		}
		for _, cl := range kc.Clusters {
			if cl.Name != ctx.Context.Cluster {
				continue
			}
			if cl.Cluster.Insecure {
				return nil, fmt.Errorf("certsecrets: kubeconfig %s: insecure-skip-tls-verify is refused for writing keys", path)
			}
			for _, u := range kc.Users {
				if u.Name != ctx.Context.User {
					continue
				}
				if len(u.User.Exec) > 0 || len(u.User.AuthProvider) > 0 {
					return nil, fmt.Errorf("certsecrets: kubeconfig %s: user %s authenticates by a plugin; use a token or a client certificate", path, u.Name)
				}
				ca, err := file(cl.Cluster.CAData, cl.Cluster.CAFile)
				if err != nil {
					return nil, fmt.Errorf("certsecrets: kubeconfig CA: %w", err)
				}
				var pair []tls.Certificate
				cert, err := file(u.User.CertData, u.User.CertFile)
				if err != nil {
					return nil, fmt.Errorf("certsecrets: kubeconfig client certificate: %w", err)
				}
				key, err := file(u.User.KeyData, u.User.KeyFile)
				if err != nil {
					return nil, fmt.Errorf("certsecrets: kubeconfig client key: %w", err)
				}
				if len(cert) > 0 {
					p, err := tls.X509KeyPair(cert, key)
					if err != nil {
						return nil, fmt.Errorf("certsecrets: kubeconfig client certificate: %w", err)
					}
					pair = []tls.Certificate{p}
				}
				return newClient(strings.TrimSuffix(cl.Cluster.Server, "/"), ca, pair, u.User.Token)
			}
		}
	}
	return nil, fmt.Errorf("certsecrets: kubeconfig %s: no cluster and user for current context %q", path, kc.CurrentContext)
}

func newClient(server string, caPEM []byte, certs []tls.Certificate, token string) (*restClient, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("certsecrets: API server %q: want https://host:port", server)
	}
	cfg := &tls.Config{Certificates: certs, MinVersion: tls.VersionTLS12}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, errors.New("certsecrets: the cluster CA holds no certificate")
		}
		cfg.RootCAs = pool
	}
	return &restClient{base: server, token: token, hc: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: cfg, Proxy: http.ProxyFromEnvironment},
	}}, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKubeconfig+1))
	if err == nil && len(b) > maxKubeconfig {
		err = fmt.Errorf("%s is larger than %d bytes", path, maxKubeconfig)
	}
	return b, err
}

func (c *restClient) do(ctx context.Context, method, url string, body []byte) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	// A Status's message is all that is read of an answer; a Secret's
	// content is never needed.
	var st struct {
		Message string `json:"message"`
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	json.Unmarshal(b, &st)
	return resp.StatusCode, st.Message, nil
}

func (c *restClient) Exists(ctx context.Context, name string) (bool, error) {
	code, msg, err := c.do(ctx, http.MethodGet, c.base+"/"+url.PathEscape(name), nil)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusOK:
		return true, nil
	case code == http.StatusNotFound:
		return false, nil
	default:
		return false, fmt.Errorf("GET %s: HTTP %d: %s", name, code, msg)
	}
}

func (c *restClient) Create(ctx context.Context, s Secret) error {
	body, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
		"metadata": map[string]any{"name": s.Name, "labels": map[string]string{"app.kubernetes.io/managed-by": "dpctl-certs"}},
		"data":     s.Data,
	})
	if err != nil {
		return err
	}
	code, msg, err := c.do(ctx, http.MethodPost, c.base, body)
	switch {
	case err != nil:
		return err
	case code == http.StatusCreated:
		return nil
	case code == http.StatusConflict:
		return ErrExists
	default:
		return fmt.Errorf("POST %s: HTTP %d: %s", s.Name, code, msg)
	}
}
