package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

const (
	// watchDebounce merges the burst of events an editor's save makes
	// (truncate, write, rename) into one reload.
	watchDebounce = 100 * time.Millisecond
	// settleInterval is how long a file written in place must keep the
	// same content before it is applied. See settle.
	settleInterval = 250 * time.Millisecond
)

// watchTimes are WatchFile's intervals; tests shorten or lengthen them.
type watchTimes struct{ debounce, settle time.Duration }

// WatchFile calls onChange with the newly parsed policy each time the file at
// path changes, until ctx ends. A file that fails to parse is logged and
// skipped, so the last good policy keeps serving. Directories are watched,
// not the file, because editors and config-map mounts replace files by
// rename: the file's own and, when path is a symlink, its target's (a
// config-map swaps a symlink two levels up, which is an event in the
// file's directory). Any event there leads to a read; only content that
// differs from the last read is parsed, and none that known (when not nil)
// reports as bytes this process wrote itself: an admin API apply serves
// what it writes, and at 10,000 routes parsing it again would cost the
// watcher ~250 ms of CPU while Envoy loads the change. onReject (when not
// nil) is called with why a read or parse of the file failed, so that the
// refusal shows where operators look, not only in the log; what onChange
// refuses, onChange reports.
func WatchFile(ctx context.Context, path string, log *slog.Logger, known func(FileSum) bool, onChange func(*policyv1.Policy) error, onReject func(error)) error {
	return watchFile(ctx, path, log, known, onChange, onReject, watchTimes{watchDebounce, settleInterval})
}

func watchFile(ctx context.Context, path string, log *slog.Logger, known func(FileSum) bool, onChange func(*policyv1.Policy) error, onReject func(error), times watchTimes) error {
	if onReject == nil {
		onReject = func(error) {}
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy: %w", err)
	}
	defer w.Close()
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watch policy: %w", err)
	}
	watched := map[string]bool{}
	target := abs
	watchDirs := func() error {
		if t, err := filepath.EvalSymlinks(abs); err == nil {
			target = t
		}
		for _, dir := range []string{filepath.Dir(abs), filepath.Dir(target)} {
			if !watched[dir] {
				if err := w.Add(dir); err != nil {
					return fmt.Errorf("watch policy: %w", err)
				}
				watched[dir] = true
			}
		}
		return nil
	}
	if err := watchDirs(); err != nil {
		return err
	}
	var last [sha256.Size]byte // of the content last parsed
	log.Debug("watching the policy file", "file", abs, "target", target)
	var s settle
	// The first read is at once: an edit made after the caller loaded the
	// file and before the directories were watched is applied, not lost.
	// The caller ignores a policy it serves already.
	timer := time.NewTimer(0)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			name := filepath.Clean(ev.Name)
			onFile := name == abs || name == target
			s.event(onFile && ev.Has(fsnotify.Create), onFile && ev.Has(fsnotify.Write))
			timer.Reset(times.debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("policy watch error", "error", err)
		case <-timer.C:
			if err := watchDirs(); err != nil {
				log.Warn("policy watch error", "error", err)
			}
			data, err := ReadFile(abs)
			if err != nil {
				log.Error("policy file rejected; the last good policy keeps serving", "error", err)
				onReject(err)
				continue
			}
			if !s.stable(data) {
				log.Debug("policy file written in place; waiting for its content to settle", "file", abs, "settle", times.settle)
				timer.Reset(times.settle)
				continue
			}
			sum := sha256.Sum256(data)
			if sum == last {
				continue
			}
			last = sum
			if known != nil && known(sum) {
				log.Debug("policy file holds what this process wrote; not parsed again", "file", abs)
				continue
			}
			p, err := Parse(data)
			if err != nil {
				err = fmt.Errorf("%s: %w", abs, err)
				log.Error("policy file rejected; the last good policy keeps serving", "error", err)
				onReject(err)
				ReleaseMemory(len(data))
				continue
			}
			if err := onChange(p); err != nil {
				log.Error("policy not applied; the last good policy keeps serving", "error", err)
				last = [sha256.Size]byte{} // the next event tries again
			}
		}
	}
}

// settle decides when a file's content is complete. A file replaced by a
// rename (an atomic save: most editors, config maps, our own writes) is
// complete when it appears. One written in place may be read half-written,
// and a prefix of a policy can be a valid policy (fewer routes, fewer
// keys), so its content is taken only once two reads a settle interval
// apart agree with no event in between. A writer that pauses longer than
// that can still be read early: write policy files by rename.
//
// This is the only place that delays a change, and the delay is only for
// in-place writes: the rename path, which push latency is measured on,
// waits only for the debounce.
type settle struct {
	inPlace bool   // the file was written in place since it was last taken
	sampled bool   // sample holds the content of the last read
	sample  []byte // its content at the last read, when inPlace
}

// event records a change in the watched directories: created says the
// file appeared (renamed into place, or created anew), written that it was
// written to. A file renamed into place was complete before it appeared;
// writes after that are in place again.
func (s *settle) event(created, written bool) {
	if created {
		s.inPlace = false
	}
	s.inPlace = s.inPlace || written
	s.sampled, s.sample = false, nil
}

// stable reports whether data may be taken now; if not, the caller reads
// again after the settle interval.
func (s *settle) stable(data []byte) bool {
	if !s.inPlace {
		return true
	}
	if !s.sampled || !bytes.Equal(s.sample, data) {
		s.sampled, s.sample = true, bytes.Clone(data)
		return false
	}
	s.inPlace, s.sampled, s.sample = false, false, nil
	return true
}
