package xds

import (
	"context"
	"fmt"
	"log/slog"
)

// cacheLogger adapts slog to go-control-plane's printf-style logger. Its
// chatter is debug level: the cache logs every watch.
type cacheLogger struct{ log *slog.Logger }

func (l cacheLogger) Debugf(format string, args ...any) { l.at(slog.LevelDebug, format, args) }
func (l cacheLogger) Infof(format string, args ...any)  { l.at(slog.LevelDebug, format, args) }
func (l cacheLogger) Warnf(format string, args ...any)  { l.at(slog.LevelWarn, format, args) }
func (l cacheLogger) Errorf(format string, args ...any) { l.at(slog.LevelError, format, args) }

func (l cacheLogger) at(level slog.Level, format string, args []any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "xds-cache")
	}
}
