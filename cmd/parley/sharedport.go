package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/parley-chat/parley/certs"
)

const (
	// alpnTURN is the ALPN protocol of TURN over TLS (RFC 7443). A client
	// that offers it goes straight to TURN; one that offers only protocols
	// we do not list would fail the handshake, so it is listed.
	alpnTURN = "stun.turn"

	// sharedHandshakeTimeout bounds a TLS handshake on the shared port.
	sharedHandshakeTimeout = 10 * time.Second
	// sharedPeekTimeout bounds the wait for the first bytes of a connection
	// that negotiated no ALPN protocol, as http.Server's ReadHeaderTimeout
	// bounds a request's headers.
	sharedPeekTimeout = 10 * time.Second
	// maxSharedAcceptBackoff caps the pause after a failed Accept.
	maxSharedAcceptBackoff = time.Second

	stunMagicCookie = 0x2112A442
)

// sharedPort serves HTTPS and TURN over TLS on one TCP port, so that a client
// that can reach only the HTTPS port still gets a relay. It accepts on the
// raw listener, completes each TLS handshake in a goroutine of its own (with
// a deadline, so a slow client never holds up the next), then sorts the
// connection:
//
//   - ALPN h2 or http/1.1 (every browser's HTTPS): HTTP, as the *tls.Conn,
//     so http.Server serves HTTP/2 and sets Request.TLS as usual;
//   - ALPN stun.turn: TURN;
//   - ALPN acme-tls/1: closed, the challenge handshake was all;
//   - no ALPN (browsers' TURN clients, some HTTP clients): by the first
//     bytes, read with a deadline: a STUN message (first two bits 0, magic
//     cookie at bytes 4 to 8) goes to TURN, anything else to HTTP; the bytes
//     read are replayed to whichever gets the connection.
//
// The port belongs to the HTTP side: closing its listener closes the port;
// closing the TURN listener only stops handing connections to TURN.
type sharedPort struct {
	// Static after construction.
	raw  net.Listener
	conf *tls.Config
	log  *slog.Logger
	ctx  context.Context    // canceled by close
	stop context.CancelFunc // cancels ctx
	http *portListener
	turn *portListener // nil when TURN is off: STUN connections are closed

	closeOnce sync.Once
	wg        sync.WaitGroup // the accept loop and the sorting goroutines
}

// newSharedPort starts sorting the connections of raw. conf must offer h2
// and http/1.1 (and stun.turn with TURN) in NextProtos.
func newSharedPort(raw net.Listener, conf *tls.Config, withTURN bool, log *slog.Logger) *sharedPort {
	ctx, stop := context.WithCancel(context.Background())
	p := &sharedPort{raw: raw, conf: conf, log: log, ctx: ctx, stop: stop}
	p.http = newPortListener(p, p.close)
	if withTURN {
		p.turn = newPortListener(p, func() {})
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p
}

// httpListener is the listener for http.Server.Serve. Closing it closes the
// port.
func (p *sharedPort) httpListener() net.Listener { return p.http }

// turnListener is the listener for the TURN server (turn.Listeners.SharedTLS),
// nil when TURN is off.
func (p *sharedPort) turnListener() net.Listener {
	if p.turn == nil {
		return nil
	}
	return p.turn
}

// Close closes the port, abandons the handshakes in progress and waits for
// their goroutines.
func (p *sharedPort) Close() error {
	p.close()
	return nil
}

func (p *sharedPort) close() {
	p.closeOnce.Do(func() {
		p.stop()
		p.raw.Close()
		p.http.shut()
		if p.turn != nil {
			p.turn.shut()
		}
		p.wg.Wait()
	})
}

func (p *sharedPort) acceptLoop() {
	defer p.wg.Done()
	backoff := 5 * time.Millisecond
	for {
		c, err := p.raw.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, and try again.
			p.log.Warn("https accept failed; retrying", "addr", p.raw.Addr(), "err", err, "in", backoff)
			select {
			case <-time.After(backoff):
			case <-p.ctx.Done():
				return
			}
			backoff = min(2*backoff, maxSharedAcceptBackoff)
			continue
		}
		backoff = 5 * time.Millisecond
		p.wg.Add(1)
		go p.sort(c)
	}
}

// sort completes the handshake of c and hands it to HTTP or TURN.
func (p *sharedPort) sort(c net.Conn) {
	defer p.wg.Done()
	tc := tls.Server(c, p.conf)
	ctx, cancel := context.WithTimeout(p.ctx, sharedHandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		// Plain HTTP to the HTTPS port: say so, as http.Server would.
		var rhe tls.RecordHeaderError
		if errors.As(err, &rhe) && rhe.Conn != nil && looksLikeHTTP(rhe.RecordHeader[:]) {
			rhe.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(rhe.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		p.log.Debug("https: TLS handshake failed", "client", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}

	switch tc.ConnectionState().NegotiatedProtocol {
	case "h2", "http/1.1":
		p.http.deliver(tc)
		return
	case certs.ALPNProto: // TLS-ALPN-01: the handshake was the whole exchange
		tc.Close()
		return
	case alpnTURN:
		p.toTURN(tc)
		return
	}
	if p.turn == nil {
		p.http.deliver(tc)
		return
	}

	first, err := p.peek(tc)
	if err != nil {
		p.log.Debug("https: no first bytes", "client", c.RemoteAddr(), "err", err)
		tc.Close()
		return
	}
	pc := &peekedConn{Conn: tc, buf: first}
	if isSTUN(first) {
		p.toTURN(pc)
	} else {
		p.http.deliver(pc)
	}
}

func (p *sharedPort) toTURN(c net.Conn) {
	if p.turn == nil {
		p.log.Debug("https: TURN over TLS while TURN is off", "client", c.RemoteAddr())
		c.Close()
		return
	}
	p.turn.deliver(c)
}

// peek reads until the first bytes tell STUN from anything else: one byte
// whose first two bits are not 0, or the 8 bytes up to the end of the magic
// cookie.
func (p *sharedPort) peek(tc *tls.Conn) ([]byte, error) {
	tc.SetReadDeadline(time.Now().Add(sharedPeekTimeout))
	// Closing the port interrupts the read.
	stop := context.AfterFunc(p.ctx, func() { tc.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 0, 512)
	for {
		n, err := tc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if len(buf) > 0 && (buf[0]&0xC0 != 0 || len(buf) >= 8) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if !stop() {
		return nil, net.ErrClosed
	}
	tc.SetReadDeadline(time.Time{})
	return buf, nil
}

// isSTUN reports whether b starts a STUN message (RFC 8489 §5): the first two
// bits 0 and the magic cookie in bytes 4 to 8. HTTP starts with a letter,
// the HTTP/2 preface with "PRI".
func isSTUN(b []byte) bool {
	return len(b) >= 8 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie
}

// looksLikeHTTP reports whether a TLS record header is in fact the start of a
// plain HTTP request.
func looksLikeHTTP(hdr []byte) bool {
	switch string(hdr) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

// peekedConn is a TLS connection whose first bytes were read to sort it; Read
// returns them first. Its ConnectionState (from the *tls.Conn) is what
// http.Server sets Request.TLS from for a connection that is not a *tls.Conn.
type peekedConn struct {
	*tls.Conn
	buf []byte // owned by the connection's reader
}

func (c *peekedConn) Read(b []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(b, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// portListener is one side of a sharedPort: a net.Listener whose Accept
// returns the connections sorted to it.
type portListener struct {
	port    *sharedPort
	onClose func()
	conns   chan net.Conn
	done    chan struct{} // closed by shut
	once    sync.Once
}

func newPortListener(p *sharedPort, onClose func()) *portListener {
	return &portListener{port: p, onClose: onClose, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Accept returns the next connection sorted to this side.
func (l *portListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops this side (and, for the HTTP side, the port).
func (l *portListener) Close() error {
	l.shut()
	l.onClose()
	return nil
}

// Addr is the port's address.
func (l *portListener) Addr() net.Addr { return l.port.raw.Addr() }

func (l *portListener) shut() { l.once.Do(func() { close(l.done) }) }

// deliver hands c to Accept, or closes it once this side is closed.
func (l *portListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}
