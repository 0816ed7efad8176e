package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// bidi is a minimal WebDriver BiDi client (https://w3c.github.io/webdriver-bidi/):
// it sends commands over one WebSocket, matches their results by id, and hands
// events to a callback. The tests need only a handful of commands; their
// parameters and results are plain JSON.
type bidi struct {
	ws *websocket.Conn
	// onEvent gets every event, on the read loop: it must not call back into
	// the client. Static after construction.
	onEvent func(method string, params json.RawMessage)
	done    chan struct{} // closed when the read loop ends

	writeMu sync.Mutex // one writer at a time, as websocket.Conn requires

	mu      sync.Mutex
	nextID  int64                    // guarded by mu
	pending map[int64]chan bidiReply // commands awaiting a result; guarded by mu
	err     error                    // why the read loop ended; guarded by mu
}

// bidiReply is any message from the remote end: a command's result, a
// command's error, or an event.
type bidiReply struct {
	Type    string          `json:"type"` // "success", "error" or "event"
	ID      *int64          `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Method  string          `json:"method"` // of an event
	Params  json.RawMessage `json:"params"` // of an event
}

// bidiWriteTimeout bounds one command's write: the remote end is local.
const bidiWriteTimeout = 10 * time.Second

// dialBiDi connects to the WebSocket at url over a connection that dial
// opens (the remote end may sit in another network namespace).
func dialBiDi(ctx context.Context, url string, dial func(context.Context) (net.Conn, error), onEvent func(string, json.RawMessage)) (*bidi, error) {
	d := websocket.Dialer{
		NetDialContext:   func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
		HandshakeTimeout: 10 * time.Second,
	}
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", url, err)
	}
	b := &bidi{
		ws:      ws,
		onEvent: onEvent,
		done:    make(chan struct{}),
		pending: make(map[int64]chan bidiReply),
	}
	go b.read()
	return b, nil
}

// call sends a command and decodes its result into result (unless nil).
// params nil sends an empty object.
func (b *bidi) call(ctx context.Context, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, err)
	}
	b.nextID++
	id := b.nextID
	replies := make(chan bidiReply, 1)
	b.pending[id] = replies
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
	}()

	msg, err := json.Marshal(struct {
		ID     int64  `json:"id"`
		Method string `json:"method"`
		Params any    `json:"params"`
	}{id, method, params})
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	b.writeMu.Lock()
	b.ws.SetWriteDeadline(time.Now().Add(bidiWriteTimeout))
	err = b.ws.WriteMessage(websocket.TextMessage, msg)
	b.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}

	select {
	case r := <-replies:
		if r.Type == "error" {
			return fmt.Errorf("%s: %s: %s", method, r.Error, r.Message)
		}
		if result == nil {
			return nil
		}
		if err := json.Unmarshal(r.Result, result); err != nil {
			return fmt.Errorf("%s: decode result: %w", method, err)
		}
		return nil
	case <-b.done:
		b.mu.Lock()
		defer b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, b.err)
	case <-ctx.Done():
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// close closes the connection; pending and later calls fail.
func (b *bidi) close() {
	b.ws.Close()
	<-b.done
}

// read is the read loop: results go to their callers, events to onEvent.
func (b *bidi) read() {
	defer close(b.done)
	for {
		_, data, err := b.ws.ReadMessage()
		if err != nil {
			b.mu.Lock()
			b.err = errors.Join(errors.New("connection to the browser closed"), err)
			b.mu.Unlock()
			return
		}
		var r bidiReply
		if err := json.Unmarshal(data, &r); err != nil {
			continue // not ours to fix; the caller's deadline reports it
		}
		if r.Type == "event" {
			if b.onEvent != nil {
				b.onEvent(r.Method, r.Params)
			}
			continue
		}
		if r.ID == nil {
			continue // an error about a message that had no readable id
		}
		b.mu.Lock()
		replies := b.pending[*r.ID]
		b.mu.Unlock()
		select {
		case replies <- r: // buffered for the one reply an id gets
		default: // nobody waits (the caller gave up), or a duplicate
		}
	}
}
