package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// Revision names a policy by its content: the same policy has the same
// revision in every process and after every restart, so an expected revision
// survives a control-plane restart and needs no counter on disk.
func Revision(p *policyv1.Policy) string {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		// A generated message always marshals; an error here is a bug.
		panic(fmt.Sprintf("policy: marshal for revision: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])[:16]
}

// WriteFileAtomic stores a policy so that a crash at any point leaves either
// the old file or the new one, never a torn one: write a temporary file in
// the same directory, fsync it, rename it over the target, fsync the
// directory. A symlink is followed to its file, which is replaced there:
// the link (a config-map mount, a file kept in version control elsewhere)
// stays a link.
func WriteFileAtomic(path string, p *policyv1.Policy) error {
	_, err := WriteFile(path, p)
	return err
}

// FileSum is the SHA-256 of a policy file's bytes.
type FileSum [sha256.Size]byte

// WriteFile is WriteFileAtomic that also returns the sum of the bytes it
// wrote, for CheckFile.
func WriteFile(path string, p *policyv1.Policy) (FileSum, error) {
	data, err := Marshal(p)
	if err != nil {
		return FileSum{}, err
	}
	// A file over the bound could not be read back at the next start.
	if len(data) > MaxPolicyBytes {
		return FileSum{}, fmt.Errorf("write policy: %w", SizeError("the policy as YAML", int64(len(data))))
	}
	if err := writeAtomic(path, data, HoldsSecrets(p)); err != nil {
		return FileSum{}, err
	}
	return sha256.Sum256(data), nil
}

// WriteSource is WriteFile for the policy p as the user wrote it, in
// source: the text is stored as is, comments, order and formatting kept.
// The caller has checked that source decodes to p.
func WriteSource(path string, source []byte, p *policyv1.Policy) (FileSum, error) {
	if len(source) > MaxPolicyBytes {
		return FileSum{}, fmt.Errorf("write policy: %w", SizeError("the policy", int64(len(source))))
	}
	if err := writeAtomic(path, source, HoldsSecrets(p)); err != nil {
		return FileSum{}, err
	}
	return sha256.Sum256(source), nil
}

// HoldsSecrets reports whether a policy carries what must not be read by
// others: an HMAC key (a JWK's k), or API key hashes, which are as good
// as the keys against a guessable key.
func HoldsSecrets(p *policyv1.Policy) bool {
	for _, a := range p.GetAuthPolicies() {
		if len(a.GetApiKeys()) > 0 {
			return true
		}
		for _, k := range a.GetJwt().GetKeys() {
			if k.GetK() != "" {
				return true
			}
		}
	}
	return false
}

// ReadableByOthers reports whether the file at path may be read by its
// group or by anyone.
func ReadableByOthers(path string) (bool, error) {
	info, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	return info.Mode().Perm()&0o077 != 0, nil
}

// writeAtomic writes data over path. The file keeps its permissions, but
// one that holds secrets is 0600 whatever it was.
func writeAtomic(path string, data []byte, secret bool) error {
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("write policy: %w", err)
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write policy: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write policy: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write policy: fsync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write policy: %w", err)
	}
	// CreateTemp made the file 0600.
	if info, err := os.Stat(path); err == nil && !secret {
		_ = os.Chmod(tmp.Name(), info.Mode().Perm())
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write policy: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write policy: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write policy: fsync dir: %w", err)
	}
	return nil
}

// ErrFileChanged is returned by CheckFileServes when the file holds
// something other than the policy being served.
var ErrFileChanged = errors.New("the policy file was changed since it was last loaded")

// CheckFileServes re-reads the policy file and reports an error wrapping
// ErrFileChanged unless it holds the policy of revision served. An apply
// through the API rewrites the file; checking first (under the apply lock,
// just before the write) keeps an operator's edit that the watcher has not
// applied yet, or that does not load, from being overwritten silently.
// Content that reads as the served policy, reformatted or not, is no loss.
func CheckFileServes(path, served string) error {
	_, err := CheckFile(path, served, FileSum{})
	return err
}

// CheckFile is CheckFileServes that first compares the file's bytes with
// known, the sum of bytes known to hold revision served (that WriteFile
// wrote, or that an earlier check read): the same bytes need no parsing,
// which at 10,000 routes would cost every apply ~150 ms. It returns the
// sum of the bytes it found serving.
func CheckFile(path, served string, known FileSum) (FileSum, error) {
	data, err := ReadFile(path)
	if err != nil {
		return FileSum{}, fmt.Errorf("%w, and it does not load (%w): fix or revert the file, then apply again", ErrFileChanged, err)
	}
	sum := sha256.Sum256(data)
	if sum == known && known != (FileSum{}) {
		return sum, nil
	}
	p, err := Parse(data)
	if err != nil {
		return FileSum{}, fmt.Errorf("%w, and it does not load (%s: %w): fix or revert the file, then apply again", ErrFileChanged, path, err)
	}
	if rev := Revision(p); rev != served {
		return FileSum{}, fmt.Errorf("%w: it holds revision %s, not the served %s, and is about to be applied from the file; apply again based on it", ErrFileChanged, rev, served)
	}
	return sum, nil
}
