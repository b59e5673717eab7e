package policy

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	policyv1 "github.com/directpipe/directpipe/api/directpipe/policy/v1"
)

// watchDebounce merges the burst of events an editor's save makes (truncate,
// write, rename) into one reload.
const watchDebounce = 100 * time.Millisecond

// WatchFile calls onChange with the newly parsed policy each time the file at
// path changes, until ctx ends. A file that fails to parse is logged and
// skipped, so the last good policy keeps serving. The directory is watched,
// not the file, because editors and config-map mounts replace files by
// rename.
func WatchFile(ctx context.Context, path string, log *slog.Logger, onChange func(*policyv1.Policy) error) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch policy: %w", err)
	}
	defer w.Close()
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("watch policy: %w", err)
	}
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("watch policy: %w", err)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) == abs && !ev.Has(fsnotify.Chmod) {
				timer.Reset(watchDebounce)
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("policy watch error", "error", err)
		case <-timer.C:
			p, err := LoadFile(abs)
			if err != nil {
				log.Error("policy file rejected; the last good policy keeps serving", "error", err)
				continue
			}
			if err := onChange(p); err != nil {
				log.Error("policy not applied; the last good policy keeps serving", "error", err)
			}
		}
	}
}
