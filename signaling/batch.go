package signaling

import (
	"bufio"
	"net"
	"net/http"
	"sync"
)

// batchSize is the size of the buffer in which the writer gathers the frames
// of several queued messages to send them in one system call.
const batchSize = 16 << 10

// batchConn is the network connection under a client's WebSocket. Between
// hold and release, what gorilla/websocket writes to it collects in a buffer
// and goes out together, so the writer sends the frames of all queued messages
// in one system call instead of one each.
type batchConn struct {
	net.Conn
	bufs *sync.Pool // of *[]byte with capacity batchSize, shared by the server

	// mu serializes writes to this one connection (nothing else waits on
	// it): besides the writer, the reader writes when gorilla/websocket
	// answers a ping or a close.
	mu   sync.Mutex
	held *[]byte // guarded by mu; non-nil between hold and release
}

// hold starts gathering writes. Every hold must be followed by release.
func (b *batchConn) hold() {
	buf := b.bufs.Get().(*[]byte)
	b.mu.Lock()
	b.held = buf
	b.mu.Unlock()
}

// release writes what was gathered since hold and stops gathering.
func (b *batchConn) release() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.flushLocked()
	b.bufs.Put(b.held)
	b.held = nil
	return err
}

// Write sends p, or adds it to the batch if one is being gathered.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.held == nil {
		return b.Conn.Write(p)
	}
	if len(*b.held)+len(p) > cap(*b.held) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*b.held) {
			return b.Conn.Write(p)
		}
	}
	*b.held = append(*b.held, p...)
	return len(p), nil
}

func (b *batchConn) flushLocked() error {
	buf := *b.held
	*b.held = buf[:0]
	if len(buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(buf)
	return err
}

// batchHijacker gives the upgrader a batchConn in place of the raw connection.
type batchHijacker struct {
	http.ResponseWriter
	bufs *sync.Pool
	conn *batchConn // set by Hijack
}

// Hijack takes over the connection from the HTTP server.
func (h *batchHijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	rwc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	h.conn = &batchConn{Conn: rwc, bufs: h.bufs}
	return h.conn, brw, nil
}
