//go:build !wasip1

package store_test

import (
	"context"
	"crypto/tls"
	"testing"
	"time"

	"github.com/directpipe/directpipe/controlplane/certs"
	"github.com/directpipe/directpipe/controlplane/store"
	"github.com/directpipe/directpipe/envoy/testkit"
)

// TestEtcdStoreOverMutualTLS: with -etcd-ca/-cert/-key the store talks to
// an etcd that requires client certificates; without a client certificate,
// or without TLS, nothing is stored.
func TestEtcdStoreOverMutualTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := certs.Generate(certs.Plan{Dir: dir, Hosts: []string{"127.0.0.1"}, Nodes: []string{"cp1"}}); err != nil {
		t.Fatal(err)
	}
	files := certs.Files{Dir: dir}
	ca, _ := files.CA()
	serverCert, serverKey := files.Server()
	clientCert, clientKey := files.Node("cp1")
	cluster := testkit.StartEtcdTLS(t, 1, &testkit.EtcdTLS{CertFile: serverCert, KeyFile: serverKey, CAFile: ca})

	open := func(t *testing.T, cfg *tls.Config) store.Shared {
		t.Helper()
		eps, err := store.ParseURL("etcd://" + cluster.Endpoints())
		if err != nil {
			t.Fatal(err)
		}
		s, err := store.NewEtcd(store.EtcdConfig{Endpoints: eps, TLS: cfg, Replica: "cp1", Log: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	mutual, err := store.ClientTLS(ca, clientCert, clientKey)
	if err != nil {
		t.Fatal(err)
	}
	caOnly, err := store.ClientTLS(ca, "", "")
	if err != nil {
		t.Fatal(err)
	}

	good := open(t, mutual)
	rev, err := good.Put(t.Context(), policyN(1), "")
	if err != nil {
		t.Fatalf("put over mutual TLS: %v", err)
	}
	refused := []struct {
		name string
		cfg  *tls.Config
	}{
		{"no client certificate", caOnly},
		{"no TLS", nil},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			_, err := open(t, tc.cfg).Put(ctx, policyN(2), rev)
			if err == nil {
				t.Fatal("put succeeded")
			}
			t.Logf("refused: %v", err)
		})
	}
	if _, got, err := good.Load(t.Context()); err != nil || got != rev {
		t.Fatalf("stored revision %s (%v), want %s: a refused client changed it", got, err, rev)
	}
}
