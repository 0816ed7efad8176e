// Package signaling is Parley's HTTP API and WebSocket relay: rooms, participants,
// and the offers, answers and ICE candidates they exchange. docs/protocol.md
// describes the wire format.
package signaling

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/config"
)

// ICEServer is one entry of the RTCPeerConnection iceServers list.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICEProvider hands out the ICE servers (and credentials) for one participant.
// The turn package satisfies it; nil means no ICE servers.
type ICEProvider interface {
	ICEServers(participantID string) []ICEServer
}

// ICEProviderFunc adapts a function to ICEProvider.
type ICEProviderFunc func(participantID string) []ICEServer

// ICEServers calls f.
func (f ICEProviderFunc) ICEServers(participantID string) []ICEServer { return f(participantID) }

// Server holds the rooms and the connected clients. It does not listen on its
// own: Register mounts its routes on a mux that the caller serves.
type Server struct {
	// Static after construction.
	rooms    config.Rooms
	sig      config.Signaling
	ice      ICEProvider
	media    MediaServer // nil: SFU rooms cannot be created
	log      *slog.Logger
	upgrader websocket.Upgrader
	batches  sync.Pool       // of *[]byte: buffers of the writers' batches in progress
	origins  map[string]bool // extra allowed origins, lower case, no trailing slash
	now      func() time.Time
	stop     chan struct{} // closed by Close; ends the sweeper
	wg       sync.WaitGroup
	adm      admission // set by SetAdmission, then guarded by its own mutex
	counts   counters

	mu       sync.Mutex
	byID     map[string]*room     // guarded by mu
	clients  map[*client]struct{} // guarded by mu; every open WebSocket
	closing  bool                 // guarded by mu; set by Shutdown
	closeOne sync.Once
}

// New returns a Server for the given room and signaling settings. ice may be nil.
func New(rooms config.Rooms, sig config.Signaling, ice ICEProvider, log *slog.Logger) *Server {
	s := &Server{
		rooms:   rooms,
		sig:     sig,
		ice:     ice,
		log:     log,
		origins: make(map[string]bool),
		now:     time.Now,
		stop:    make(chan struct{}),
		byID:    make(map[string]*room),
		clients: make(map[*client]struct{}),
		counts:  newCounters(),
	}
	for _, o := range sig.AllowedOrigins {
		s.origins[normalizeOrigin(o)] = true
	}
	s.batches.New = func() any {
		buf := make([]byte, 0, batchSize)
		return &buf
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		CheckOrigin:      s.checkOrigin,
		// Idle participants should cost little memory: reuse the server's read
		// buffer and borrow write buffers only while writing.
		WriteBufferPool: &sync.Pool{},
		Error: func(w http.ResponseWriter, r *http.Request, status int, reason error) {
			s.refuse(w, status, CodeBadHandshake, reason.Error())
		},
	}
	s.wg.Add(1)
	go s.sweep()
	return s
}

// EnableSFU lets rooms be created in SFU mode, with ms forwarding their media.
// Call it before serving.
func (s *Server) EnableSFU(ms MediaServer) {
	s.media = ms
}

// Register mounts the API, the WebSocket and the health check on mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/rooms", s.handleCreateRoom)
	mux.HandleFunc("GET /api/rooms/{id}", s.handleGetRoom)
	mux.HandleFunc("GET /ws", s.handleWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
}

// Shutdown tells every connected participant that the server is going away,
// closes their WebSockets and waits until their goroutines are done or ctx
// ends. New WebSockets are refused from the start of Shutdown.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()

	bye := encode(byeMsg{Type: TypeBye, Reason: "server shutting down"})
	for _, c := range clients {
		c.send(bye)
		c.kill(websocket.CloseGoingAway, "server shutting down")
	}
	s.Close()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the background room sweeper. It does not wait for clients; use
// Shutdown for that.
func (s *Server) Close() {
	s.closeOne.Do(func() { close(s.stop) })
}

// Stats is a snapshot of the server's size.
type Stats struct {
	Rooms        int
	Participants int
	Connections  int
}

// Stats returns the current number of rooms, joined participants and open
// WebSockets.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Rooms: len(s.byID), Connections: len(s.clients)}
	for _, r := range s.byID {
		st.Participants += len(r.members)
	}
	return st
}

func (s *Server) handleCreateRoom(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		s.refuse(w, http.StatusRequestEntityTooLarge, CodeTooLarge, "request body is over 4 KiB")
		return
	}
	var req struct {
		Mode     *string `json:"mode"`
		Password string  `json:"password"`
		Token    string  `json:"token"`
	}
	if len(bytes.TrimSpace(body)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			s.refuse(w, http.StatusBadRequest, CodeBadMessage, "body must be empty or a JSON object like {\"mode\":\"p2p\"}: "+err.Error())
			return
		}
	}
	switch s.adm.checkCreateToken(r, req.Token) {
	case CodeCreateTokenRequired:
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
		s.refuse(w, http.StatusUnauthorized, CodeCreateTokenRequired, "this server needs a room-creation token to create rooms")
		return
	case CodeBadCreateToken:
		s.refuse(w, http.StatusForbidden, CodeBadCreateToken, "the room-creation token is not right")
		return
	}
	mode := s.rooms.DefaultMode
	if req.Mode != nil {
		mode = *req.Mode
	}
	switch mode {
	case config.ModeP2P:
	case config.ModeSFU:
		if s.media == nil {
			s.refuse(w, http.StatusBadRequest, CodeUnsupportedMode, "this server runs without an SFU; use \"p2p\"")
			return
		}
	default:
		s.refuse(w, http.StatusBadRequest, CodeBadMode, "mode must be \"p2p\" or \"sfu\"")
		return
	}
	if len(req.Password) > MaxPasswordLength {
		s.refuse(w, http.StatusBadRequest, CodeBadMessage, fmt.Sprintf("password is over %d bytes", MaxPasswordLength))
		return
	}
	if ok, wait := s.adm.allowRoom(clientKey(r.RemoteAddr), s.now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
		s.refuse(w, http.StatusTooManyRequests, CodeTooManyRooms,
			fmt.Sprintf("this address has created %d rooms in the last hour; try again later", s.adm.roomsPerHour))
		return
	}

	rm := s.createRoom(mode, req.Password)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	writeJSON(w, http.StatusCreated, map[string]string{
		"id":   rm.id,
		"url":  scheme + "://" + r.Host + "/r/" + rm.id,
		"mode": rm.mode,
	})
}

func (s *Server) handleGetRoom(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	rm := s.lookupLocked(r.PathValue("id"))
	s.mu.Unlock()
	if rm == nil {
		s.refuse(w, http.StatusNotFound, CodeRoomNotFound, "this room does not exist or has expired")
		return
	}
	// id, mode and password are static after creation.
	writeJSON(w, http.StatusOK, map[string]any{"id": rm.id, "mode": rm.mode, "password": rm.password != nil})
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		s.refuse(w, http.StatusServiceUnavailable, CodeShuttingDown, "server is shutting down")
		return
	}
	key := clientKey(r.RemoteAddr)
	if !s.adm.acquireConn(key) {
		s.log.Debug("websocket refused: too many from this address", "remote", r.RemoteAddr)
		s.refuse(w, http.StatusTooManyRequests, CodeTooManyConnections,
			fmt.Sprintf("this address has %d connections open already", s.adm.connsPerClient))
		return
	}
	hj := &batchHijacker{ResponseWriter: w, bufs: &s.batches}
	conn, err := s.upgrader.Upgrade(hj, r, nil)
	if err != nil {
		s.adm.releaseConn(key)
		s.log.Debug("websocket upgrade refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "err", err)
		return // the upgrader has answered
	}
	c := newClient(s, conn, hj.conn)
	s.counts.connections.Add(1)

	s.mu.Lock()
	if s.closing {
		// Shutdown started after the upgrade and did not see this client.
		s.mu.Unlock()
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		conn.WriteMessage(websocket.TextMessage, encode(byeMsg{Type: TypeBye, Reason: "server shutting down"}))
		conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"), time.Now().Add(time.Second))
		conn.Close()
		s.adm.releaseConn(key)
		return
	}
	s.clients[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()

	// The connection lives on in its own two goroutines. Returning from the
	// handler lets the HTTP server free what it kept for the request (its
	// buffers, the request, a deep stack): most of an idle client's memory.
	go func() {
		defer s.wg.Done()
		c.writeLoop()
	}()
	go func() {
		defer s.wg.Done()
		reason := c.readLoop()
		c.kill(websocket.CloseNormalClosure, "")
		s.leave(c, reason)
		s.mu.Lock()
		delete(s.clients, c)
		s.mu.Unlock()
		s.adm.releaseConn(key)
	}()
}

func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser: no page to protect
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return s.origins[normalizeOrigin(origin)]
}

func normalizeOrigin(o string) string {
	return strings.TrimSuffix(strings.ToLower(o), "/")
}

// sweep removes expired rooms so their memory goes back even if nobody looks
// them up again.
func (s *Server) sweep() {
	defer s.wg.Done()
	every := min(s.rooms.EmptyTTL/2, time.Minute)
	t := time.NewTicker(max(every, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			for id := range s.byID {
				s.lookupLocked(id)
			}
			s.mu.Unlock()
			s.adm.forget(s.now())
		}
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// refuse answers an API request or a WebSocket upgrade with a JSON error
// and counts it by code.
func (s *Server) refuse(w http.ResponseWriter, status int, code, msg string) {
	s.counts.httpErrors.inc(code)
	writeError(w, status, code, msg)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// randomID returns n random bytes from crypto/rand, URL-safe base64 encoded.
func randomID(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand documents it)
	return base64.RawURLEncoding.EncodeToString(b)
}

// logTag names a room in logs without revealing its id, which is what lets
// someone in.
func logTag(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:4])
}
