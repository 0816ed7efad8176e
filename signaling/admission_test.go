package signaling_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/signaling"
)

// startAdmitting is startServer with admission settings.
func startAdmitting(t *testing.T, adm config.Admission) *testServer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := signaling.New(defaultRooms(), fastSignaling(), nil, log)
	s.SetAdmission(adm)
	mux := http.NewServeMux()
	s.Register(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		hs.Close()
	})
	return &testServer{t: t, sig: s, http: hs}
}

// post sends POST /api/rooms with body and headers, and returns the status,
// the headers and the decoded JSON body.
func (ts *testServer) post(body string, header http.Header) (int, http.Header, map[string]any) {
	ts.t.Helper()
	req, err := http.NewRequest("POST", ts.http.URL+"/api/rooms", strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := ts.http.Client().Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		ts.t.Fatalf("POST /api/rooms: body %q is not JSON: %v", b, err)
	}
	return resp.StatusCode, resp.Header, v
}

func errorCode(v map[string]any) string {
	e, _ := v["error"].(map[string]any)
	if e == nil || e["message"] == "" {
		return ""
	}
	code, _ := e["code"].(string)
	return code
}

func TestCreateToken(t *testing.T) {
	t.Parallel()
	ts := startAdmitting(t, config.Admission{CreateToken: "s3cret token"})
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	for _, tc := range []struct {
		name   string
		body   string
		header http.Header
		status int
		code   string
	}{
		{"no token", `{}`, nil, http.StatusUnauthorized, signaling.CodeCreateTokenRequired},
		{"empty body, no token", ``, nil, http.StatusUnauthorized, signaling.CodeCreateTokenRequired},
		{"other scheme", `{}`, http.Header{"Authorization": {"Basic czNjcmV0"}}, http.StatusUnauthorized, signaling.CodeCreateTokenRequired},
		{"empty bearer", `{}`, bearer(""), http.StatusUnauthorized, signaling.CodeCreateTokenRequired},
		{"wrong header", `{}`, bearer("s3cret"), http.StatusForbidden, signaling.CodeBadCreateToken},
		{"longer header", `{}`, bearer("s3cret token!"), http.StatusForbidden, signaling.CodeBadCreateToken},
		{"wrong body token", `{"token":"guess"}`, nil, http.StatusForbidden, signaling.CodeBadCreateToken},
		{"header beats body", `{"token":"s3cret token"}`, bearer("guess"), http.StatusForbidden, signaling.CodeBadCreateToken},
		{"right header", `{}`, bearer("s3cret token"), http.StatusCreated, ""},
		{"right header, lower-case scheme", ``, http.Header{"Authorization": {"bearer s3cret token"}}, http.StatusCreated, ""},
		{"right body token", `{"token":"s3cret token","mode":"p2p"}`, nil, http.StatusCreated, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts.t = t
			status, h, v := ts.post(tc.body, tc.header)
			if status != tc.status || errorCode(v) != tc.code {
				t.Fatalf("= %d %v, want %d %q", status, v, tc.status, tc.code)
			}
			if status == http.StatusUnauthorized && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without WWW-Authenticate: Bearer (got %q)", h.Get("WWW-Authenticate"))
			}
			if status == http.StatusCreated && v["id"] == "" {
				t.Errorf("201 without a room id: %v", v)
			}
		})
	}
	ts.t = t
	if got := ts.sig.Stats().Rooms; got != 3 {
		t.Errorf("%d rooms, want 3 (only the requests with the token)", got)
	}
	c := ts.sig.Counters()
	if c.HTTPErrors[signaling.CodeCreateTokenRequired] != 4 || c.HTTPErrors[signaling.CodeBadCreateToken] != 4 {
		t.Errorf("HTTPErrors = %v, want 4 create_token_required and 4 bad_create_token", c.HTTPErrors)
	}
}

func TestRoomPassword(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	status, v := ts.do("POST", "/api/rooms", `{"password":"correct horse"}`)
	if status != http.StatusCreated {
		t.Fatalf("create with password = %d %v", status, v)
	}
	room := v["id"].(string)
	open := ts.createRoom()

	for id, want := range map[string]bool{room: true, open: false} {
		status, v := ts.do("GET", "/api/rooms/"+id, "")
		if status != http.StatusOK || v["password"] != want {
			t.Errorf("GET /api/rooms/%s = %d %v, want password %v", id, status, v, want)
		}
	}
	if status, v := ts.do("POST", "/api/rooms", `{"password":"`+strings.Repeat("p", signaling.MaxPasswordLength+1)+`"}`); status != http.StatusBadRequest {
		t.Errorf("create with a password over the limit = %d %v, want 400", status, v)
	}

	ada, bob := ts.dial("Ada"), ts.dial("Bob")
	ada.send(map[string]string{"type": "join", "room": room, "name": "Ada", "password": "correct horse"})
	ada.id = ada.expect(signaling.TypeJoined).ID

	// Wrong and missing passwords are refused; the connection stays and
	// nobody in the room hears of it.
	for _, tc := range []struct{ password, code string }{
		{"", signaling.CodePasswordRequired},
		{"Correct horse", signaling.CodeBadPassword},
		{"correct horse ", signaling.CodeBadPassword},
		{strings.Repeat("x", signaling.MaxPasswordLength+1), signaling.CodeBadPassword},
	} {
		bob.send(map[string]string{"type": "join", "room": room, "name": "Bob", "password": tc.password})
		bob.expectError(tc.code, signaling.TypeJoin)
	}
	ada.expectNothing(quiet)
	if st := ts.sig.Stats(); st.Participants != 1 {
		t.Errorf("Stats() = %+v, want 1 participant", st)
	}

	// The same connection joins with the right password.
	bob.send(map[string]string{"type": "join", "room": room, "name": "Bob", "password": "correct horse"})
	bob.id = bob.expect(signaling.TypeJoined).ID
	if p := ada.expect(signaling.TypePeerJoined).Peer; p == nil || p.ID != bob.id {
		t.Errorf("Ada got peer-joined %+v, want Bob", p)
	}
	// A room without a password ignores one.
	cy := ts.dial("Cy")
	cy.send(map[string]string{"type": "join", "room": open, "name": "Cy", "password": "whatever"})
	cy.expect(signaling.TypeJoined)

	// Guessing: the connection is closed after a few wrong passwords.
	eve := ts.dial("Eve")
	guess := []byte(`{"type":"join","room":"` + room + `","password":"guess"}`)
	guesses := 0
	for open := true; open; {
		if guesses++; guesses > 50 {
			t.Fatal("still open after 50 wrong passwords")
		}
		eve.conn.WriteMessage(websocket.TextMessage, guess) // fails once the server has closed
		select {
		case m, ok := <-eve.in:
			if ok && m.Code != signaling.CodeBadPassword {
				t.Fatalf("guess %d: got %s, want bad_password", guesses, m.raw)
			}
			open = ok
		case <-time.After(waitLong):
			t.Fatalf("guess %d: no answer", guesses)
		}
	}
	var ce *websocket.CloseError
	if !errors.As(eve.err, &ce) || ce.Code != websocket.ClosePolicyViolation {
		t.Errorf("after %d wrong passwords the connection ended with %v, want close 1008", guesses, eve.err)
	}

	c := ts.sig.Counters()
	if c.Errors[signaling.CodePasswordRequired] != 1 || c.Errors[signaling.CodeBadPassword] < 3+5 {
		t.Errorf("Errors = %v, want password_required 1 and bad_password counted", c.Errors)
	}
}

func TestRoomsPerClient(t *testing.T) {
	t.Parallel()
	ts := startAdmitting(t, config.Admission{RoomsPerClient: 3, ConnectionsPerClient: 100})
	for i := range 3 {
		if status, _, v := ts.post(`{}`, nil); status != http.StatusCreated {
			t.Fatalf("room %d = %d %v, want 201", i+1, status, v)
		}
	}
	status, h, v := ts.post(`{}`, nil)
	if status != http.StatusTooManyRequests || errorCode(v) != signaling.CodeTooManyRooms {
		t.Fatalf("room 4 = %d %v, want 429 too_many_rooms", status, v)
	}
	// 3 per hour: the next one is 20 minutes away.
	if ra, _ := strconv.Atoi(h.Get("Retry-After")); ra < 1000 || ra > 1300 {
		t.Errorf("Retry-After = %d, want about 1200 seconds", ra)
	}
	if got := ts.sig.Stats().Rooms; got != 3 {
		t.Errorf("%d rooms, want 3", got)
	}
}

func TestConnectionsPerClient(t *testing.T) {
	t.Parallel()
	ts := startAdmitting(t, config.Admission{RoomsPerClient: 100, ConnectionsPerClient: 2})
	a, b := ts.dial("A"), ts.dial("B")
	_ = b

	conn, resp, err := websocket.DefaultDialer.Dial(ts.wsURL(), nil)
	if err == nil {
		conn.Close()
		t.Fatal("third WebSocket from one address was accepted, want 429")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("third WebSocket: %v (%v), want 429", err, resp)
	}
	var v map[string]any
	json.NewDecoder(resp.Body).Decode(&v)
	resp.Body.Close()
	if errorCode(v) != signaling.CodeTooManyConnections {
		t.Errorf("third WebSocket: body %v, want JSON error too_many_connections", v)
	}

	// Closing one gives its place back.
	a.close()
	ts.waitStats(signaling.Stats{Connections: 1})
	ts.dial("C")
}

// TestCounters checks the running totals behind /metrics.
func TestCounters(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	before := ts.sig.Counters()
	for _, m := range []string{signaling.TypeJoin, signaling.TypeOffer, signaling.MessageInvalid} {
		if _, ok := before.Messages[m]; !ok {
			t.Errorf("Messages has no %q series before any message", m)
		}
	}
	if before.ParticipantsByMode[config.ModeP2P] != 0 || len(before.ParticipantsByMode) != 2 {
		t.Errorf("ParticipantsByMode = %v, want p2p and sfu at 0", before.ParticipantsByMode)
	}

	room := ts.createRoom()
	ada, bob := ts.dial("Ada"), ts.dial("Bob")
	joinAll(room, ada, bob)
	ada.offer(bob, "sdp")
	bob.expectRelay(signaling.TypeOffer, ada, "sdp")
	ada.sendRaw(websocket.TextMessage, []byte(`{"type":`))
	ada.expectError(signaling.CodeBadMessage, "")
	ada.send(map[string]string{"type": "chat"})
	ada.expectError(signaling.CodeUnknownType, "chat")

	c := ts.sig.Counters()
	if c.ParticipantsByMode[config.ModeP2P] != 2 {
		t.Errorf("ParticipantsByMode = %v, want 2 in p2p", c.ParticipantsByMode)
	}
	for name, want := range map[string]uint64{signaling.TypeJoin: 2, signaling.TypeOffer: 1, signaling.MessageInvalid: 2} {
		if got := c.Messages[name] - before.Messages[name]; got != want {
			t.Errorf("Messages[%s] moved by %d, want %d", name, got, want)
		}
	}
	for code, want := range map[string]uint64{signaling.CodeBadMessage: 1, signaling.CodeUnknownType: 1} {
		if got := c.Errors[code] - before.Errors[code]; got != want {
			t.Errorf("Errors[%s] moved by %d, want %d", code, got, want)
		}
	}
	if c.RoomsCreated != 1 || c.ConnectionsTotal != 2 || c.Errors[signaling.CounterOther] != 0 {
		t.Errorf("Counters = %+v, want 1 room, 2 connections, nothing counted as other", c)
	}
}
