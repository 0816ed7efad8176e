package turn

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// LevelTrace is the slog level that pion's Trace messages are logged at,
// below slog.LevelDebug.
const LevelTrace = slog.LevelDebug - 4

// NewLoggerFactory returns a pion LoggerFactory that writes to log, each
// pion scope as a "scope" attribute. Messages are formatted only when their
// level is enabled, so pion's per-packet debug lines cost nothing in
// production.
func NewLoggerFactory(log *slog.Logger) logging.LoggerFactory {
	return loggerFactory{log: log, info: slog.LevelInfo}
}

// loggerFactory implements logging.LoggerFactory. Static after construction.
type loggerFactory struct {
	log *slog.Logger
	// info is the level pion's Info messages go to. The TURN server lowers
	// it to debug: pion/turn logs at info for things a client or a peer
	// controls the rate of ("permission denied", "no permission for peer"),
	// and such lines must not flood the log of a server under attack.
	info slog.Level
}

// NewLogger implements logging.LoggerFactory.
func (f loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{log: f.log.With("scope", scope), info: f.info}
}

// pionLogger implements logging.LeveledLogger on slog. Static after
// construction.
type pionLogger struct {
	log  *slog.Logger
	info slog.Level
}

func (l *pionLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	l.log.Log(ctx, level, fmt.Sprintf(format, args...))
}

func (l *pionLogger) Trace(msg string)                  { l.logf(LevelTrace, "%s", msg) }
func (l *pionLogger) Tracef(format string, args ...any) { l.logf(LevelTrace, format, args...) }
func (l *pionLogger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l *pionLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l *pionLogger) Info(msg string)                   { l.logf(l.info, "%s", msg) }
func (l *pionLogger) Infof(format string, args ...any)  { l.logf(l.info, format, args...) }
func (l *pionLogger) Warn(msg string)                   { l.logf(slog.LevelWarn, "%s", msg) }
func (l *pionLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args...) }
func (l *pionLogger) Error(msg string)                  { l.logf(slog.LevelError, "%s", msg) }
func (l *pionLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args...) }
