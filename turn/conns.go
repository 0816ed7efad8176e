package turn

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

const (
	// tlsHandshakeTimeout bounds a TLS handshake.
	tlsHandshakeTimeout = 10 * time.Second
	// tcpIdleTimeout is the default of Options.TCPIdleTimeout. A client that
	// still uses its allocation talks more often: it must refresh
	// permissions every 5 minutes and channels every 10 to keep receiving.
	// pion sets no timeout of its own, so without this an idle connection
	// would hold a goroutine forever.
	tcpIdleTimeout = 15 * time.Minute
	// maxAcceptBackoff caps the pause after a failed Accept (e.g. out of file
	// descriptors) before the next try.
	maxAcceptBackoff = time.Second
)

// connTracker keeps the TCP and TLS connections of the server so that Close
// can end them (pion does not) and wait until pion's goroutine for each is
// done with it (it closes the connection last).
type connTracker struct {
	idle time.Duration // static after construction

	mu     sync.Mutex
	closed bool                      // guarded by mu
	conns  map[*trackedConn]struct{} // guarded by mu
	wg     sync.WaitGroup            // one per tracked conn, done when it is closed
}

func newConnTracker(idle time.Duration) *connTracker {
	return &connTracker{idle: idle, conns: make(map[*trackedConn]struct{})}
}

// add tracks c, or closes it if the tracker is closed.
func (t *connTracker) add(c net.Conn) (*trackedConn, error) {
	tc := &trackedConn{Conn: c, t: t}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	t.conns[tc] = struct{}{}
	t.wg.Add(1)
	return tc, nil
}

// closeAll closes every tracked connection underneath its owner, which then
// sees a read error, cleans up and closes its side.
func (t *connTracker) closeAll() {
	t.mu.Lock()
	t.closed = true
	conns := make([]*trackedConn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.Conn.Close()
	}
}

// count returns the number of open connections.
func (t *connTracker) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// trackedConn is a TCP connection the tracker knows. Its Read keeps the idle
// deadline moving.
type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

// Read reads with the idle deadline.
func (c *trackedConn) Read(b []byte) (int, error) {
	if err := c.Conn.SetReadDeadline(time.Now().Add(c.t.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

// Close closes the connection and forgets it.
func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
		c.t.wg.Done()
	})
	return err
}

// trackingListener hands pion tracked connections. pion's accept loop ends
// for good at the first Accept error, so temporary errors (out of file
// descriptors) are waited out here, with backoff; only closing the listener
// ends it.
type trackingListener struct {
	net.Listener
	t    *connTracker
	log  *slog.Logger
	done chan struct{} // closed by Close
	once sync.Once
}

func newTrackingListener(l net.Listener, t *connTracker, log *slog.Logger) *trackingListener {
	return &trackingListener{Listener: l, t: t, log: log, done: make(chan struct{})}
}

// Accept returns the next connection, tracked.
func (l *trackingListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			tc, err := l.t.add(c)
			if err != nil {
				return nil, err
			}
			return tc, nil
		}
		select {
		case <-l.done:
			return nil, net.ErrClosed
		default:
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		l.log.Warn("turn accept failed; retrying", "addr", l.Addr(), "err", err, "in", backoff)
		timer := time.NewTimer(backoff)
		select {
		case <-timer.C:
		case <-l.done:
			timer.Stop()
			return nil, net.ErrClosed
		}
		backoff = min(2*backoff, maxAcceptBackoff)
	}
}

// Close closes the listener.
func (l *trackingListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// tlsListener accepts TCP connections, completes their TLS handshakes in
// goroutines of its own (with a timeout) and hands pion only connections
// whose handshake succeeded. pion would do the handshake itself, but on
// failure it leaves the connection open.
type tlsListener struct {
	// Static after construction.
	inner *trackingListener
	conf  *tls.Config
	log   *slog.Logger
	ctx   context.Context    // canceled by Close
	stop  context.CancelFunc // cancels ctx

	ready chan *tls.Conn // handshaken connections for Accept
	wg    sync.WaitGroup // the accept loop and the handshakes
}

func newTLSListener(inner *trackingListener, conf *tls.Config, log *slog.Logger) *tlsListener {
	ctx, stop := context.WithCancel(context.Background())
	l := &tlsListener{inner: inner, conf: conf, log: log, ctx: ctx, stop: stop, ready: make(chan *tls.Conn)}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *tlsListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.inner.Accept()
		if err != nil {
			return // closed
		}
		l.wg.Add(1)
		go l.handshake(c)
	}
}

func (l *tlsListener) handshake(c net.Conn) {
	defer l.wg.Done()
	tc := tls.Server(c, l.conf)
	ctx, cancel := context.WithTimeout(l.ctx, tlsHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.log.Debug("turn tls handshake failed", "client", c.RemoteAddr(), "err", err)
		tc.Close()
		return
	}
	select {
	case l.ready <- tc:
	case <-l.ctx.Done():
		tc.Close()
	}
}

// Accept returns the next connection with a completed handshake.
func (l *tlsListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ready:
		return c, nil
	case <-l.ctx.Done():
		return nil, net.ErrClosed
	}
}

// Close stops accepting; handshakes in progress are abandoned.
func (l *tlsListener) Close() error {
	l.stop()
	return l.inner.Close()
}

// Addr returns the listener's address.
func (l *tlsListener) Addr() net.Addr { return l.inner.Addr() }

// wait waits for the accept loop and the handshakes to end, after Close.
func (l *tlsListener) wait() { l.wg.Wait() }
