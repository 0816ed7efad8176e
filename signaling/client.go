package signaling

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/time/rate"
)

const (
	// sendQueueLen bounds the messages waiting for one client's writer. A client
	// this far behind is not keeping up with signaling and is disconnected (its
	// browser reconnects) rather than stalling the senders.
	sendQueueLen = 512
	// keptQueueCap is the largest queue the writer keeps for reuse once it is
	// empty: an idle client should not keep a burst's worth of slots.
	keptQueueCap = 32
	// writeWait bounds one write to a client.
	writeWait = 5 * time.Second
	// maxStrikes is how many rate-limited messages in a row a client may send
	// before it is disconnected as abusive.
	maxStrikesFactor = 2
)

// client is one WebSocket connection. It has one reader (readLoop) and one
// writer (writeLoop); everything else talks to it through send and kill.
type client struct {
	srv  *Server
	conn *websocket.Conn
	wire *batchConn // conn's network connection

	// Guarded by srv.mu.
	room  *room
	id    string
	name  string
	media MediaSession // in SFU rooms: the connection to the media server

	// The send queue is a slice rather than a channel so that an idle client
	// does not hold sendQueueLen slots, and so that the writer can take
	// everything queued at once.
	qmu     sync.Mutex
	queue   [][]byte      // guarded by qmu
	writing int           // guarded by qmu; messages taken by the writer, not yet written
	wake    chan struct{} // capacity 1; signalled after a message is queued
	spare   [][]byte      // owned by writeLoop; the queue's emptied other half

	done     chan struct{} // closed by kill
	killOnce sync.Once
	// closeCode and closeText are set once by kill before done is closed.
	closeCode int
	closeText string
	dropped   atomic.Int64 // messages dropped because the queue was full

	// Owned by readLoop.
	limiter      *rate.Limiter
	strikes      int
	lastLimit    time.Time
	badPasswords int
}

func newClient(s *Server, conn *websocket.Conn, wire *batchConn) *client {
	return &client{
		srv:     s,
		conn:    conn,
		wire:    wire,
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		limiter: rate.NewLimiter(rate.Limit(s.sig.MessageRate), s.sig.MessageBurst),
	}
}

// send queues msg for the writer without blocking. If the queue is full the
// client is too slow and is disconnected.
func (c *client) send(msg []byte) {
	select {
	case <-c.done:
		return
	default:
	}
	c.qmu.Lock()
	full := c.writing+len(c.queue) >= sendQueueLen
	if !full {
		c.queue = append(c.queue, msg)
	}
	c.qmu.Unlock()
	if full {
		if c.dropped.Add(1) == 1 {
			c.srv.counts.slowClients.Add(1)
		}
		c.kill(websocket.CloseTryAgainLater, "too slow: send queue full")
		return
	}
	select {
	case c.wake <- struct{}{}:
	default: // already signalled; the writer will see this message too
	}
}

// kill asks the writer to send a close frame and close the connection, which
// also ends the reader. Only the first call's code and text are used.
func (c *client) kill(code int, text string) {
	c.killOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		close(c.done)
	})
}

// readLoop reads and handles messages until the connection ends, and returns
// why it ended as a peer-left reason.
func (c *client) readLoop() string {
	sig := c.srv.sig
	c.conn.SetReadLimit(hardFrameLimit)
	c.conn.SetReadDeadline(time.Now().Add(sig.PeerTimeout))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(sig.PeerTimeout))
	})
	var buf bytes.Buffer
	for {
		kind, r, err := c.conn.NextReader()
		if err != nil {
			return c.endReason(err)
		}
		c.conn.SetReadDeadline(time.Now().Add(sig.PeerTimeout))

		buf.Reset()
		n, err := buf.ReadFrom(io.LimitReader(r, MaxFrameSize+1))
		if err != nil {
			return c.endReason(err)
		}
		if n > MaxFrameSize {
			if _, err := io.Copy(io.Discard, r); err != nil {
				c.kill(websocket.CloseMessageTooBig, "frame over 1 MiB")
				return c.endReason(err)
			}
			c.sendError(protoErr(CodeTooLarge, "", "frame is over the %d byte limit and was discarded", MaxFrameSize))
			continue
		}
		if !c.allow() {
			continue
		}
		if kind != websocket.TextMessage {
			c.sendError(protoErr(CodeBadMessage, "", "messages must be JSON text frames"))
			continue
		}
		c.handle(buf.Bytes())
		if buf.Cap() > 4<<10 {
			buf = bytes.Buffer{} // don't keep a big SDP's buffer for an idle client
		}
	}
}

// allow applies the rate limit. A dropped message is answered with rate_limited
// (at most once a second); a client that keeps flooding is disconnected.
func (c *client) allow() bool {
	if c.limiter.Allow() {
		c.strikes = 0
		return true
	}
	c.strikes++
	if c.strikes > maxStrikesFactor*c.srv.sig.MessageBurst {
		c.kill(websocket.ClosePolicyViolation, "rate limit exceeded")
		return false
	}
	if now := time.Now(); now.Sub(c.lastLimit) >= time.Second {
		c.lastLimit = now
		c.sendError(protoErr(CodeRateLimited, "", "too many messages; at most %g per second", c.srv.sig.MessageRate))
	}
	return false
}

func (c *client) handle(frame []byte) {
	m, perr := Decode(frame)
	if perr != nil {
		c.srv.counts.messages.inc(MessageInvalid)
	} else {
		c.srv.counts.messages.inc(m.Type)
		switch m.Type {
		case TypeJoin:
			perr = c.srv.join(c, m)
		case TypeLeave:
			if !c.srv.leave(c, ReasonLeft) {
				perr = protoErr(CodeNotJoined, m.Type, "not in a room")
			}
		default:
			perr = c.srv.relay(c, m)
		}
	}
	if perr != nil {
		c.sendError(perr)
	}
	if perr != nil && perr.Code == CodeBadPassword {
		if c.badPasswords++; c.badPasswords >= maxBadPasswords {
			c.kill(websocket.ClosePolicyViolation, "too many wrong passwords")
		}
	}
}

func (c *client) sendError(e *ProtocolError) {
	c.srv.log.Debug("message refused", "remote", c.conn.RemoteAddr().String(), "code", e.Code, "ref", e.Ref, "err", e.Msg)
	c.srv.counts.errors.inc(e.Code)
	c.send(encode(errorMsg{Type: TypeError, Code: e.Code, Message: e.Msg, Ref: e.Ref}))
}

func (c *client) endReason(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return ReasonTimeout
	}
	return ReasonDisconnected
}

// writeLoop writes queued messages and pings until kill, then flushes what is
// queued, sends the close frame and closes the connection.
func (c *client) writeLoop() {
	ping := time.NewTicker(c.srv.sig.PingInterval)
	defer ping.Stop()
	defer c.conn.Close()
	for {
		select {
		case <-c.wake:
			if err := c.writeQueued(); err != nil {
				c.kill(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-ping.C:
			if err := c.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(writeWait)); err != nil {
				c.kill(websocket.CloseAbnormalClosure, "")
				return
			}
		case <-c.done:
			c.flush()
			return
		}
	}
}

// writeQueued writes everything in the queue. The frames are gathered and
// leave in as few system calls as batchSize allows: one write per message
// would cost more than everything else the server does to relay it.
func (c *client) writeQueued() error {
	c.qmu.Lock()
	batch := c.queue
	c.queue = c.spare
	c.writing = len(batch)
	c.qmu.Unlock()

	var err error
	if len(batch) == 1 {
		err = c.write(batch[0])
	} else {
		c.wire.hold()
		for _, msg := range batch {
			if err = c.write(msg); err != nil {
				break
			}
		}
		if werr := c.wire.release(); err == nil {
			err = werr
		}
	}

	c.qmu.Lock()
	c.writing = 0
	c.qmu.Unlock()
	clear(batch) // drop the references to the messages
	if cap(batch) > keptQueueCap {
		batch = nil
	}
	c.spare = batch[:0]
	return err
}

func (c *client) write(msg []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(writeWait))
	return c.conn.WriteMessage(websocket.TextMessage, msg)
}

// flush writes what is still queued (a bye, a last error) and the close frame,
// within one write deadline in total.
func (c *client) flush() {
	if c.closeCode == websocket.CloseAbnormalClosure {
		return // the connection is already broken
	}
	deadline := time.Now().Add(time.Second)
	c.conn.SetWriteDeadline(deadline)
	if c.closeCode != websocket.CloseTryAgainLater {
		c.qmu.Lock()
		queued := c.queue
		c.queue = nil
		c.qmu.Unlock()
		for _, msg := range queued {
			if c.conn.WriteMessage(websocket.TextMessage, msg) != nil {
				return
			}
		}
	}
	c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText), deadline)
}
