package mtls

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// watched holds the server's certificate, key and client CA bundle (if
// any) as one set, and reads the files again, at a handshake at most once per recheck,
// when their content changed. Certificates are rotated by writing files
// (a Kubernetes Secret volume swaps all of them at once; cert-manager, an
// operator or a script may write them one by one), so a set is taken only
// whole: a half-written file, a key that is not the certificate's, or a
// certificate outside its validity is refused with a log line, and the
// last good set keeps serving. A refused set is not retried until a file
// changes again.
type watched struct {
	files   Files
	log     *slog.Logger
	recheck time.Duration

	mu      sync.Mutex
	cfg     *tls.Config // the last good set; never nil after load
	sum     [sha256.Size]byte
	refused [sha256.Size]byte
	logged  string // the last refusal logged
	checked time.Time
}

// load reads the files and takes them if they changed and make a good
// set; at start, when there is no set yet, any error is returned.
func (w *watched) load() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.loadLocked(time.Now())
}

// current is the set to serve, read again first if it may have changed.
func (w *watched) current() *tls.Config {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	if now.Sub(w.checked) >= w.recheck {
		// An error is logged by loadLocked; the last good set serves.
		_ = w.loadLocked(now)
	}
	return w.cfg
}

func (w *watched) loadLocked(now time.Time) error {
	w.checked = now
	key, err := readKey(w.files.Key)
	if err != nil {
		return w.refuse(err, nil)
	}
	cert, err := readBounded(w.files.Cert)
	if err != nil {
		return w.refuse(fmt.Errorf("server certificate: %w", err), nil)
	}
	var ca []byte
	if w.files.ClientCA != "" {
		if ca, err = readBounded(w.files.ClientCA); err != nil {
			return w.refuse(fmt.Errorf("client CA: %w", err), nil)
		}
	}
	h := sha256.New()
	for _, b := range [][]byte{cert, key, ca} {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if w.cfg != nil && (sum == w.sum || sum == w.refused) {
		return nil
	}
	cfg, cas, err := serverSet(cert, key, ca, w.files, now)
	if err != nil {
		return w.refuse(err, &sum)
	}
	first := w.cfg == nil
	w.cfg, w.sum, w.logged = cfg, sum, ""
	leaf := cfg.Certificates[0].Leaf
	msg := "mTLS certificates reloaded"
	if first {
		msg = "mTLS certificates loaded"
	}
	w.log.Info(msg, "cert", w.files.Cert, "serial", fmt.Sprintf("%x", leaf.SerialNumber),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "issuer", leaf.Issuer.CommonName,
		"client_cas", cas)
	return nil
}

// refuse records a set that does not load. Before the first good set the
// error stops the server from starting; after it, the old set serves and
// each new reason is logged once.
func (w *watched) refuse(err error, sum *[sha256.Size]byte) error {
	err = fmt.Errorf("mtls: %w", err)
	if w.cfg == nil {
		return err
	}
	if sum != nil {
		w.refused = *sum
	}
	if err.Error() != w.logged {
		w.logged = err.Error()
		w.log.Error("mTLS certificates not reloaded; the previous ones keep serving", "err", err)
	}
	return err
}

// serverSet checks a certificate, its key and a client CA bundle as one
// set and makes the configuration that serves them.
// It also returns how many CAs the bundle holds.
func serverSet(certPEM, keyPEM, caPEM []byte, f Files, now time.Time) (*tls.Config, int, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, 0, fmt.Errorf("%s and %s: %w", f.Cert, f.Key, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, 0, fmt.Errorf("%s: %w", f.Cert, err)
		}
		pair.Leaf = leaf
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, 0, fmt.Errorf("%s is valid from %s to %s, not now", f.Cert,
			leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if f.ClientCA == "" {
		return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}, 0, nil
	}
	pool, n, err := parseBundle(caPEM)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", f.ClientCA, err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		Certificates: []tls.Certificate{pair},
		ClientCAs:    pool,
	}, n, nil
}

// parseBundle reads a CA bundle strictly: every block a certificate that
// parses, nothing else in the file. x509.CertPool.AppendCertsFromPEM skips
// what it cannot read, so a bundle cut short while the new CA is appended
// would silently trust only the old one.
func parseBundle(b []byte) (*x509.CertPool, int, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, 0, errors.New("the CA bundle ends in something that is not a whole PEM block (a file still being written?)")
			}
			break
		}
		if blk.Type != "CERTIFICATE" {
			return nil, 0, fmt.Errorf("the CA bundle holds a %q block; only certificates belong there", strings.ToLower(blk.Type))
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, 0, fmt.Errorf("CA certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, 0, errors.New("no certificate in the CA bundle")
	}
	return pool, n, nil
}
