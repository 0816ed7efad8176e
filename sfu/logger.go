package sfu

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/pion/logging"
)

// levelTrace is the slog level of pion's Trace messages, below slog.LevelDebug.
const levelTrace = slog.LevelDebug - 4

// logTarget is the slog.Logger that pion's loggers write to. It can be set
// after the loggers exist: Listen creates the ICE muxes (and their loggers)
// before New is given the process logger. Until then it is slog.Default().
type logTarget struct {
	log atomic.Pointer[slog.Logger]
}

func (t *logTarget) get() *slog.Logger {
	if l := t.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// loggerFactory implements logging.LoggerFactory on slog, each pion scope as a
// "scope" attribute. Static after construction.
type loggerFactory struct {
	target *logTarget
}

// NewLogger implements logging.LoggerFactory.
func (f loggerFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{target: f.target, scope: scope}
}

// pionLogger implements logging.LeveledLogger. Messages are formatted only
// when their level is enabled, so pion's per-packet trace lines cost nothing.
//
// Levels are lowered by one step. pion logs every ICE and DTLS state change
// of every PeerConnection at info, and warns about what one peer sends or
// about streams closing on a normal leave: per-participant chatter that the
// SFU summarises in its own lines, and that no client must be able to turn
// into warnings in the server's log. pion's errors become warnings.
type pionLogger struct {
	target *logTarget
	scope  string
}

func (l *pionLogger) logf(level slog.Level, format string, args ...any) {
	ctx := context.Background()
	log := l.target.get()
	if !log.Enabled(ctx, level) {
		return
	}
	log.Log(ctx, level, fmt.Sprintf(format, args...), "scope", l.scope)
}

func (l *pionLogger) Trace(msg string)                  { l.logf(levelTrace, "%s", msg) }
func (l *pionLogger) Tracef(format string, args ...any) { l.logf(levelTrace, format, args...) }
func (l *pionLogger) Debug(msg string)                  { l.logf(slog.LevelDebug, "%s", msg) }
func (l *pionLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args...) }
func (l *pionLogger) Info(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l *pionLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l *pionLogger) Warn(msg string)                   { l.logf(slog.LevelDebug, "%s", msg) }
func (l *pionLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelDebug, format, args...) }
func (l *pionLogger) Error(msg string)                  { l.logf(slog.LevelWarn, "%s", msg) }
func (l *pionLogger) Errorf(format string, args ...any) { l.logf(slog.LevelWarn, format, args...) }
