package signaling_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/signaling"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLong bounds a wait for something that must happen; quiet is how long a
// client must stay silent to show that something did not reach it.
const (
	waitLong = 5 * time.Second
	quiet    = 200 * time.Millisecond
)

// fastSignaling has timers short enough for tests and limits that never get
// in the way of a test that is not about them.
func fastSignaling() config.Signaling {
	return config.Signaling{
		MessageRate:  10000,
		MessageBurst: 10000,
		PingInterval: 100 * time.Millisecond,
		// Long enough that a test process starved of CPU for a while (other
		// tests, the race detector) does not lose its clients.
		PeerTimeout: 3 * time.Second,
	}
}

func defaultRooms() config.Rooms { return config.Default().Rooms }

// testServer is a signaling.Server mounted on a real HTTP server on 127.0.0.1.
type testServer struct {
	t    *testing.T
	sig  *signaling.Server
	http *httptest.Server
}

func startServer(t *testing.T, rooms config.Rooms, sig config.Signaling, ice signaling.ICEProvider) *testServer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := signaling.New(rooms, sig, ice, log)
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

func (ts *testServer) wsURL() string { return "ws" + strings.TrimPrefix(ts.http.URL, "http") + "/ws" }

// do sends an HTTP request and returns the status and the decoded JSON body
// (nil when the body is not JSON).
func (ts *testServer) do(method, path, body string) (int, map[string]any) {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.http.URL+path, strings.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	resp, err := ts.http.Client().Do(req)
	if err != nil {
		ts.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		ts.t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	var v map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &v); err != nil {
			ts.t.Fatalf("%s %s: body %q is not a JSON object: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, v
}

// waitStats polls Stats until it equals want: a connection is counted until
// its handler has finished, just after its peer-left went out.
func (ts *testServer) waitStats(want signaling.Stats) {
	ts.t.Helper()
	deadline := time.Now().Add(waitLong)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got := ts.sig.Stats()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			ts.t.Fatalf("Stats() = %+v, want %+v", got, want)
		}
		<-tick.C
	}
}

// createRoom creates a p2p room and returns its id.
func (ts *testServer) createRoom() string {
	ts.t.Helper()
	status, v := ts.do("POST", "/api/rooms", "")
	if status != http.StatusCreated {
		ts.t.Fatalf("POST /api/rooms = %d %v, want 201", status, v)
	}
	return v["id"].(string)
}

// msg is any server message; the fields a type does not have stay empty.
type msg struct {
	Type       string                `json:"type"`
	Room       string                `json:"room"`
	Mode       string                `json:"mode"`
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Peers      []signaling.PeerInfo  `json:"peers"`
	ICEServers []signaling.ICEServer `json:"iceServers"`
	Peer       *signaling.PeerInfo   `json:"peer"`
	Reason     string                `json:"reason"`
	From       string                `json:"from"`
	SDP        string                `json:"sdp"`
	Candidate  *signaling.Candidate  `json:"candidate"`
	Audio      *bool                 `json:"audio"`
	Video      *bool                 `json:"video"`
	Screen     *bool                 `json:"screen"`
	Code       string                `json:"code"`
	Message    string                `json:"message"`
	Ref        string                `json:"ref"`

	raw []byte
}

// wsClient is a real WebSocket client. A goroutine reads everything the server
// sends (which also answers the server's pings) into in.
type wsClient struct {
	t    *testing.T
	name string
	conn *websocket.Conn
	in   chan msg      // closed when the connection ends
	done chan struct{} // closed with in; err is set before
	err  error         // why the connection ended
	id   string        // participant id once joined
}

func (ts *testServer) dial(name string) *wsClient {
	ts.t.Helper()
	c, resp, err := ts.dialOrigin(name, "")
	if err != nil {
		ts.t.Fatalf("dial %s: %v (%v)", name, err, resp)
	}
	return c
}

// dialOrigin dials /ws with the given Origin header ("" sends none). The
// client is closed when the test ends.
func (ts *testServer) dialOrigin(name, origin string) (*wsClient, *http.Response, error) {
	h := http.Header{}
	if origin != "" {
		h.Set("Origin", origin)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(ts.wsURL(), h)
	if err != nil {
		return nil, resp, err
	}
	// A pong that cannot be sent (the server has gone) must not end the
	// reader before it has read what the server sent last, its close frame.
	conn.SetPingHandler(func(data string) error {
		conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		return nil
	})
	c := &wsClient{t: ts.t, name: name, conn: conn, in: make(chan msg, 10000), done: make(chan struct{})}
	go c.read()
	ts.t.Cleanup(c.close)
	return c, resp, nil
}

func (c *wsClient) read() {
	defer close(c.done)
	defer close(c.in)
	for {
		kind, b, err := c.conn.ReadMessage()
		if err != nil {
			c.err = err
			return
		}
		var m msg
		if kind != websocket.TextMessage || json.Unmarshal(b, &m) != nil {
			m = msg{Type: "(not a JSON text message)"}
		}
		m.raw = b
		c.in <- m
	}
}

// close closes the socket and waits for the reader to end.
func (c *wsClient) close() {
	c.conn.Close()
	<-c.done
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(websocket.TextMessage, b)
}

func (c *wsClient) sendRaw(kind int, b []byte) {
	c.t.Helper()
	if err := c.conn.WriteMessage(kind, b); err != nil {
		c.t.Fatalf("%s: write: %v", c.name, err)
	}
}

// next returns the next message, failing the test if none comes in time.
func (c *wsClient) next() msg {
	c.t.Helper()
	select {
	case m, ok := <-c.in:
		if !ok {
			c.t.Fatalf("%s: connection ended while waiting for a message: %v", c.name, c.err)
		}
		return m
	case <-time.After(waitLong):
		c.t.Fatalf("%s: no message within %v", c.name, waitLong)
	}
	panic("unreachable")
}

// expect returns the next message and checks its type.
func (c *wsClient) expect(typ string) msg {
	c.t.Helper()
	m := c.next()
	if m.Type != typ {
		c.t.Fatalf("%s: got %s, want %s", c.name, m.raw, typ)
	}
	return m
}

// expectError checks that the next message is an error with code and ref.
func (c *wsClient) expectError(code, ref string) {
	c.t.Helper()
	m := c.expect(signaling.TypeError)
	if m.Code != code || m.Ref != ref {
		c.t.Fatalf("%s: got %s, want error %s with ref %q", c.name, m.raw, code, ref)
	}
	if m.Message == "" {
		c.t.Fatalf("%s: error %s has no message", c.name, m.raw)
	}
}

// skipUntil discards messages until one of type typ, and returns it.
func (c *wsClient) skipUntil(typ string) msg {
	c.t.Helper()
	for {
		if m := c.next(); m.Type == typ {
			return m
		}
	}
}

// expectNothing checks that nothing arrives within d (or is already waiting).
func (c *wsClient) expectNothing(d time.Duration) {
	c.t.Helper()
	check := func(m msg, ok bool) {
		c.t.Helper()
		if ok {
			c.t.Fatalf("%s: got %s, want nothing", c.name, m.raw)
		}
		c.t.Fatalf("%s: connection ended: %v", c.name, c.err)
	}
	select {
	case m, ok := <-c.in:
		check(m, ok)
	default:
	}
	select {
	case m, ok := <-c.in:
		check(m, ok)
	case <-time.After(d):
	}
}

// expectClose checks that the connection ends with a close frame of the given
// code, after messages of the skip types only.
func (c *wsClient) expectClose(code int, skip ...string) {
	c.t.Helper()
	timeout := time.After(waitLong)
	for {
		select {
		case m, ok := <-c.in:
			if ok && slices.Contains(skip, m.Type) {
				continue
			}
			if ok {
				c.t.Fatalf("%s: got %.200s, want close %d", c.name, m.raw, code)
			}
		case <-timeout:
			c.t.Fatalf("%s: connection still open after %v, want close %d", c.name, waitLong, code)
		}
		break
	}
	var ce *websocket.CloseError
	if !errors.As(c.err, &ce) || ce.Code != code {
		c.t.Fatalf("%s: connection ended with %v, want close code %d", c.name, c.err, code)
	}
}

// join joins room and checks the answer.
func (c *wsClient) join(room string) msg {
	c.t.Helper()
	c.send(map[string]string{"type": "join", "room": room, "name": c.name})
	m := c.expect(signaling.TypeJoined)
	if m.Room != room || m.ID == "" || m.Name != c.name || m.Mode != config.ModeP2P {
		c.t.Fatalf("%s: joined %s, want room %s with name %q, mode p2p and an id", c.name, m.raw, room, c.name)
	}
	c.id = m.ID
	return m
}

// offer sends an offer to peer.
func (c *wsClient) offer(to *wsClient, sdp string) {
	c.t.Helper()
	c.send(map[string]string{"type": "offer", "to": to.id, "sdp": sdp})
}

// expectRelay checks that the next message is typ from sender with sdp.
func (c *wsClient) expectRelay(typ string, from *wsClient, sdp string) msg {
	c.t.Helper()
	m := c.expect(typ)
	if m.From != from.id || m.SDP != sdp {
		c.t.Fatalf("%s: got %.200s, want %s from %s (%s) with sdp %q", c.name, m.raw, typ, from.name, from.id, sdp)
	}
	return m
}

// joinAll joins every client to room in order; each one already in is told.
func joinAll(room string, clients ...*wsClient) {
	for i, c := range clients {
		c.join(room)
		for _, o := range clients[:i] {
			m := o.expect(signaling.TypePeerJoined)
			if m.Peer == nil || m.Peer.ID != c.id || m.Peer.Name != c.name {
				o.t.Fatalf("%s: got %s, want peer-joined of %s (%s)", o.name, m.raw, c.name, c.id)
			}
		}
	}
}

func expectPeerLeft(c, gone *wsClient, reason string) {
	c.t.Helper()
	m := c.expect(signaling.TypePeerLeft)
	if m.ID != gone.id || m.Reason != reason {
		c.t.Fatalf("%s: got %s, want peer-left of %s (%s) with reason %s", c.name, m.raw, gone.name, gone.id, reason)
	}
}

var urlSafeID = regexp.MustCompile(`^[A-Za-z0-9_-]{22,}$`)

func TestCreateRoom(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)

	for _, body := range []string{"", "  \n", "{}", `{"mode":"p2p"}`, `{"mode":null}`} {
		status, v := ts.do("POST", "/api/rooms", body)
		if status != http.StatusCreated {
			t.Fatalf("POST /api/rooms %q = %d %v, want 201", body, status, v)
		}
		id, _ := v["id"].(string)
		if !urlSafeID.MatchString(id) {
			t.Errorf("room id %q is not ≥ 22 URL-safe characters", id)
		}
		if u, _ := v["url"].(string); u != ts.http.URL+"/r/"+id {
			t.Errorf("room url = %q, want %s/r/%s", u, ts.http.URL, id)
		}
		if v["mode"] != config.ModeP2P {
			t.Errorf("room mode = %v, want p2p", v["mode"])
		}
		status, v = ts.do("GET", "/api/rooms/"+id, "")
		if status != http.StatusOK || v["id"] != id || v["mode"] != config.ModeP2P {
			t.Errorf("GET /api/rooms/%s = %d %v, want 200 with id and mode", id, status, v)
		}
	}

	seen := make(map[string]bool)
	for range 300 {
		id := ts.createRoom()
		if seen[id] || !urlSafeID.MatchString(id) {
			t.Fatalf("room id %q is repeated or not URL-safe", id)
		}
		seen[id] = true
	}
	if got := ts.sig.Stats().Rooms; got != 305 {
		t.Errorf("Stats().Rooms = %d, want 305", got)
	}
}

func TestCreateRoomRefused(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{`, http.StatusBadRequest, signaling.CodeBadMessage},
		{`not json`, http.StatusBadRequest, signaling.CodeBadMessage},
		{`[]`, http.StatusBadRequest, signaling.CodeBadMessage},
		{`"p2p"`, http.StatusBadRequest, signaling.CodeBadMessage},
		{`{"mode":5}`, http.StatusBadRequest, signaling.CodeBadMessage},
		{`{"mode":"p2p","private":true}`, http.StatusBadRequest, signaling.CodeBadMessage},
		{`{"mode":"mesh"}`, http.StatusBadRequest, "bad_mode"},
		{`{"mode":""}`, http.StatusBadRequest, "bad_mode"},
		{`{"mode":"sfu"}`, http.StatusBadRequest, "unsupported_mode"},
		{`{"mode":"` + strings.Repeat("p", 5000) + `"}`, http.StatusRequestEntityTooLarge, "too_large"},
	} {
		status, v := ts.do("POST", "/api/rooms", tc.body)
		e, _ := v["error"].(map[string]any)
		if status != tc.status || e == nil || e["code"] != tc.code || e["message"] == "" {
			t.Errorf("POST /api/rooms %.40q = %d %v, want %d with JSON error %s", tc.body, status, v, tc.status, tc.code)
		}
	}
	if got := ts.sig.Stats().Rooms; got != 0 {
		t.Errorf("refused requests created %d rooms", got)
	}
}

func TestGetRoomAndHealth(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	status, v := ts.do("GET", "/api/rooms/AAAAAAAAAAAAAAAAAAAAAA", "")
	if e, _ := v["error"].(map[string]any); status != http.StatusNotFound || e == nil || e["code"] != signaling.CodeRoomNotFound {
		t.Errorf("GET unknown room = %d %v, want 404 room_not_found", status, v)
	}
	resp, err := ts.http.Client().Get(ts.http.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /healthz = %d, want 200", resp.StatusCode)
	}
}

func TestJoinAndLeave(t *testing.T) {
	t.Parallel()
	ice := signaling.ICEProviderFunc(func(participant string) []signaling.ICEServer {
		return []signaling.ICEServer{{URLs: []string{"turn:127.0.0.1:3478?transport=udp"}, Username: "user-" + participant, Credential: "pw"}}
	})
	ts := startServer(t, defaultRooms(), fastSignaling(), ice)
	room := ts.createRoom()
	ada, bob, cy := ts.dial("Ada"), ts.dial("Bob"), ts.dial("Cy")

	m := ada.join(room)
	if len(m.Peers) != 0 {
		t.Errorf("first joiner got peers %v, want none", m.Peers)
	}
	want := []signaling.ICEServer{{URLs: []string{"turn:127.0.0.1:3478?transport=udp"}, Username: "user-" + ada.id, Credential: "pw"}}
	if !reflect.DeepEqual(m.ICEServers, want) {
		t.Errorf("iceServers = %+v, want %+v", m.ICEServers, want)
	}

	m = bob.join(room)
	if len(m.Peers) != 1 || m.Peers[0] != (signaling.PeerInfo{ID: ada.id, Name: "Ada"}) {
		t.Errorf("Bob got peers %+v, want Ada", m.Peers)
	}
	if p := ada.expect(signaling.TypePeerJoined).Peer; p == nil || *p != (signaling.PeerInfo{ID: bob.id, Name: "Bob"}) {
		t.Errorf("Ada got peer-joined %+v, want Bob", p)
	}

	m = cy.join(room)
	wantPeers := []signaling.PeerInfo{{ID: ada.id, Name: "Ada"}, {ID: bob.id, Name: "Bob"}}
	if !reflect.DeepEqual(m.Peers, wantPeers) {
		t.Errorf("Cy got peers %+v, want %+v in join order", m.Peers, wantPeers)
	}
	ada.expect(signaling.TypePeerJoined)
	bob.expect(signaling.TypePeerJoined)
	if ids := map[string]bool{ada.id: true, bob.id: true, cy.id: true}; len(ids) != 3 {
		t.Errorf("participant ids are not distinct: %s %s %s", ada.id, bob.id, cy.id)
	}
	if st := ts.sig.Stats(); st != (signaling.Stats{Rooms: 1, Participants: 3, Connections: 3}) {
		t.Errorf("Stats() = %+v", st)
	}

	// leave: the others are told, and the connection can join again.
	bob.send(map[string]string{"type": "leave"})
	expectPeerLeft(ada, bob, signaling.ReasonLeft)
	expectPeerLeft(cy, bob, signaling.ReasonLeft)
	oldID := bob.id
	m = bob.join(room)
	if bob.id == oldID || len(m.Peers) != 2 {
		t.Errorf("rejoin: id %s (was %s), peers %+v; want a new id and two peers", bob.id, oldID, m.Peers)
	}
	ada.expect(signaling.TypePeerJoined)
	cy.expect(signaling.TypePeerJoined)

	// A closed connection is reported as disconnected.
	cy.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "bye"))
	expectPeerLeft(ada, cy, signaling.ReasonDisconnected)
	expectPeerLeft(bob, cy, signaling.ReasonDisconnected)
}

func TestJoinWithoutICEProvider(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	c := ts.dial("Ada")
	m := c.join(ts.createRoom())
	if !bytes.Contains(m.raw, []byte(`"iceServers":[]`)) || !bytes.Contains(m.raw, []byte(`"peers":[]`)) {
		t.Errorf("joined = %s, want empty (not null) iceServers and peers", m.raw)
	}
}

func TestRelay(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	room1, room2 := ts.createRoom(), ts.createRoom()
	ada, bob, cy := ts.dial("Ada"), ts.dial("Bob"), ts.dial("Cy")
	dan, eve := ts.dial("Dan"), ts.dial("Eve")
	joinAll(room1, ada, bob, cy)
	joinAll(room2, dan, eve)
	// Every relay of this test goes on in both rooms at once, so a leak either
	// way would be seen.
	pairs := [][3]*wsClient{{ada, bob, cy}, {dan, eve, nil}}

	for _, p := range pairs {
		p[0].offer(p[1], "offer "+p[0].name)
		p[1].expectRelay(signaling.TypeOffer, p[0], "offer "+p[0].name)
		p[1].send(map[string]string{"type": "answer", "to": p[0].id, "sdp": "answer " + p[1].name})
		p[0].expectRelay(signaling.TypeAnswer, p[1], "answer "+p[1].name)
	}

	cand := signaling.Candidate{Candidate: "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr[uint16](0), UsernameFragment: ptr("uf")}
	for _, c := range []signaling.Candidate{cand, {}} {
		ada.send(map[string]any{"type": "candidate", "to": bob.id, "candidate": c})
		m := bob.expect(signaling.TypeCandidate)
		if m.From != ada.id || m.Candidate == nil || !reflect.DeepEqual(*m.Candidate, c) {
			t.Fatalf("Bob got %s, want candidate %+v from Ada", m.raw, c)
		}
	}

	// media goes to everyone else in the room, not back to the sender.
	ada.send(map[string]any{"type": "media", "audio": true, "video": false, "screen": true})
	for _, c := range []*wsClient{bob, cy} {
		m := c.expect(signaling.TypeMedia)
		if m.From != ada.id || m.Audio == nil || !*m.Audio || m.Video == nil || *m.Video || m.Screen == nil || !*m.Screen {
			t.Errorf("%s got %s, want Ada's media state", c.name, m.raw)
		}
	}
	dan.send(map[string]any{"type": "media", "audio": false, "video": true})
	eve.expect(signaling.TypeMedia)

	// Addressing someone in another room is refused.
	ada.offer(dan, "cross-room")
	ada.expectError(signaling.CodePeerNotFound, signaling.TypeOffer)
	dan.send(map[string]any{"type": "candidate", "to": ada.id, "candidate": cand})
	dan.expectError(signaling.CodePeerNotFound, signaling.TypeCandidate)

	// Nobody got anything that was not meant for them.
	for _, c := range []*wsClient{ada, bob, cy, dan, eve} {
		c.expectNothing(quiet)
	}
}

// TestBadInput sends every kind of bad message and checks the error code, and
// that the connection still relays afterwards.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	room, other := ts.createRoom(), ts.createRoom()
	ada, bob := ts.dial("Ada"), ts.dial("Bob")
	stranger := ts.dial("Stranger")
	joinAll(room, ada, bob)
	stranger.join(other)

	bigSDP := strings.Repeat("a", signaling.MaxSDPSize+1)
	for i, tc := range []struct {
		name      string
		kind      int
		frame     string
		code, ref string
	}{
		{"invalid JSON", websocket.TextMessage, `{"type":`, signaling.CodeBadMessage, ""},
		{"not an object", websocket.TextMessage, `["offer"]`, signaling.CodeBadMessage, ""},
		{"no type", websocket.TextMessage, `{"to":"x"}`, signaling.CodeBadMessage, ""},
		{"unknown type", websocket.TextMessage, `{"type":"chat","text":"hi"}`, signaling.CodeUnknownType, "chat"},
		{"wrong field type", websocket.TextMessage, `{"type":"offer","to":5,"sdp":"x"}`, signaling.CodeBadMessage, "offer"},
		{"missing to", websocket.TextMessage, `{"type":"offer","sdp":"x"}`, signaling.CodeBadMessage, "offer"},
		{"missing sdp", websocket.TextMessage, `{"type":"answer","to":"` + bob.id + `"}`, signaling.CodeBadMessage, "answer"},
		{"missing candidate", websocket.TextMessage, `{"type":"candidate","to":"` + bob.id + `"}`, signaling.CodeBadMessage, "candidate"},
		{"media without video", websocket.TextMessage, `{"type":"media","audio":true}`, signaling.CodeBadMessage, "media"},
		{"unknown peer", websocket.TextMessage, `{"type":"offer","to":"nobody","sdp":"x"}`, signaling.CodePeerNotFound, "offer"},
		{"peer in another room", websocket.TextMessage, `{"type":"offer","to":"` + stranger.id + `","sdp":"x"}`, signaling.CodePeerNotFound, "offer"},
		{"self", websocket.TextMessage, `{"type":"offer","to":"` + ada.id + `","sdp":"x"}`, signaling.CodePeerNotFound, "offer"},
		{"double join", websocket.TextMessage, `{"type":"join","room":"` + room + `"}`, signaling.CodeAlreadyJoined, "join"},
		{"join another room", websocket.TextMessage, `{"type":"join","room":"` + other + `"}`, signaling.CodeAlreadyJoined, "join"},
		{"sdp over the limit", websocket.TextMessage, `{"type":"offer","to":"` + bob.id + `","sdp":"` + bigSDP + `"}`, signaling.CodeTooLarge, "offer"},
		{"frame over 64 KiB", websocket.TextMessage, `{"type":"leave","pad":"` + strings.Repeat(" ", 100<<10) + `"}`, signaling.CodeTooLarge, ""},
		{"binary frame", websocket.BinaryMessage, `{"type":"leave"}`, signaling.CodeBadMessage, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ada.t, bob.t = t, t
			ada.sendRaw(tc.kind, []byte(tc.frame))
			ada.expectError(tc.code, tc.ref)
			sdp := fmt.Sprintf("still works %d", i)
			ada.offer(bob, sdp)
			bob.expectRelay(signaling.TypeOffer, ada, sdp)
		})
	}
	ada.t, bob.t = t, t
	// The leave that was too large or binary did not take effect.
	bob.expectNothing(quiet)
	stranger.expectNothing(0)
}

// TestBeforeJoin checks the errors of a connection that is not in a room, and
// that it can join afterwards.
func TestBeforeJoin(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	room := ts.createRoom()
	ada, bob := ts.dial("Ada"), ts.dial("Bob")
	bob.join(room)

	for _, tc := range []struct {
		frame     string
		code, ref string
	}{
		{`{"type":"offer","to":"` + bob.id + `","sdp":"x"}`, signaling.CodeNotJoined, "offer"},
		{`{"type":"answer","to":"` + bob.id + `","sdp":"x"}`, signaling.CodeNotJoined, "answer"},
		{`{"type":"candidate","to":"` + bob.id + `","candidate":{"candidate":""}}`, signaling.CodeNotJoined, "candidate"},
		{`{"type":"media","audio":true,"video":true}`, signaling.CodeNotJoined, "media"},
		{`{"type":"leave"}`, signaling.CodeNotJoined, "leave"},
		{`{"type":"join","room":"AAAAAAAAAAAAAAAAAAAAAA"}`, signaling.CodeRoomNotFound, "join"},
		{`{"type":"join","room":"` + strings.Repeat("x", 200) + `"}`, signaling.CodeRoomNotFound, "join"},
		{`{"type":"join","room":"` + room + `","name":"` + strings.Repeat("n", 65) + `"}`, signaling.CodeBadMessage, "join"},
	} {
		ada.sendRaw(websocket.TextMessage, []byte(tc.frame))
		ada.expectError(tc.code, tc.ref)
	}
	bob.expectNothing(quiet)
	ada.join(room)
	bob.expect(signaling.TypePeerJoined)
	ada.offer(bob, "now")
	bob.expectRelay(signaling.TypeOffer, ada, "now")
}

func TestRoomFull(t *testing.T) {
	t.Parallel()
	rooms := defaultRooms()
	rooms.MaxParticipants = 3
	ts := startServer(t, rooms, fastSignaling(), nil)
	room := ts.createRoom()
	ada, bob, cy, dan := ts.dial("Ada"), ts.dial("Bob"), ts.dial("Cy"), ts.dial("Dan")
	joinAll(room, ada, bob, cy)

	dan.send(map[string]string{"type": "join", "room": room})
	dan.expectError(signaling.CodeRoomFull, signaling.TypeJoin)
	for _, c := range []*wsClient{ada, bob, cy} {
		c.expectNothing(0)
	}
	// Another room is not affected.
	dan.join(ts.createRoom())
	dan.send(map[string]string{"type": "leave"})

	bob.send(map[string]string{"type": "leave"})
	expectPeerLeft(ada, bob, signaling.ReasonLeft)
	expectPeerLeft(cy, bob, signaling.ReasonLeft)
	m := dan.join(room)
	if len(m.Peers) != 2 {
		t.Errorf("Dan got peers %+v, want Ada and Cy", m.Peers)
	}
	bob.send(map[string]string{"type": "join", "room": room})
	bob.expectError(signaling.CodeRoomFull, signaling.TypeJoin)
}

// waitRoomGone polls GET /api/rooms/{id} until it answers 404.
func (ts *testServer) waitRoomGone(id string) {
	ts.t.Helper()
	deadline := time.Now().Add(waitLong)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		status, _ := ts.do("GET", "/api/rooms/"+id, "")
		if status == http.StatusNotFound {
			return
		}
		if status != http.StatusOK || time.Now().After(deadline) {
			ts.t.Fatalf("GET /api/rooms/%s = %d, want 404 within %v", id, status, waitLong)
		}
		<-tick.C
	}
}

func TestRoomExpiry(t *testing.T) {
	t.Parallel()
	rooms := defaultRooms()
	rooms.EmptyTTL = time.Second
	ts := startServer(t, rooms, fastSignaling(), nil)

	// A room nobody joins expires.
	unused := ts.createRoom()
	ts.waitRoomGone(unused)
	c := ts.dial("Ada")
	c.send(map[string]string{"type": "join", "room": unused})
	c.expectError(signaling.CodeRoomNotFound, signaling.TypeJoin)

	// An occupied room lives on past the TTL, and expires once it is empty.
	room := ts.createRoom()
	c.join(room)
	c.expectNothing(rooms.EmptyTTL * 3 / 2) // the room outlives its TTL while occupied
	if status, v := ts.do("GET", "/api/rooms/"+room, ""); status != http.StatusOK {
		t.Fatalf("occupied room: GET = %d %v, want 200", status, v)
	}
	c.send(map[string]string{"type": "leave"})
	ts.waitRoomGone(room)
	c.send(map[string]string{"type": "join", "room": room})
	c.expectError(signaling.CodeRoomNotFound, signaling.TypeJoin)
	if got := ts.sig.Stats().Rooms; got != 0 {
		t.Errorf("Stats().Rooms = %d after expiry, want 0", got)
	}
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	sig := fastSignaling()
	sig.MessageRate, sig.MessageBurst = 1, 10
	ts := startServer(t, defaultRooms(), sig, nil)
	room := ts.createRoom()
	ada, bob, cy := ts.dial("Ada"), ts.dial("Bob"), ts.dial("Cy")
	joinAll(room, ada, bob, cy) // one message of Ada's burst

	media := map[string]any{"type": "media", "audio": true, "video": true}
	for range sig.MessageBurst - 1 {
		ada.send(media)
	}
	ada.send(media) // over the burst: dropped
	ada.expectError(signaling.CodeRateLimited, "")
	for range sig.MessageBurst - 1 {
		bob.expect(signaling.TypeMedia)
	}
	// Nothing more was relayed; by the end of this wait a token is back.
	bob.expectNothing(time.Duration(float64(time.Second) / sig.MessageRate * 1.5))
	ada.offer(bob, "after the limit")
	bob.expectRelay(signaling.TypeOffer, ada, "after the limit")

	// A flooder is disconnected; the others go on.
flood:
	for range 1000 {
		select {
		case <-cy.done:
			break flood
		default:
		}
		if err := cy.conn.WriteJSON(media); err != nil {
			break // the server has closed the connection
		}
	}
	cy.skipUntil(signaling.TypeError)
	cy.expectClose(websocket.ClosePolicyViolation, signaling.TypeMedia, signaling.TypeError)
	for _, c := range []*wsClient{ada, bob} {
		c.skipUntil(signaling.TypePeerLeft)
	}
	bob.offer(ada, "still here")
	ada.expectRelay(signaling.TypeOffer, bob, "still here")
}

func TestFrameOverOneMiB(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	room := ts.createRoom()
	ada, bob := ts.dial("Ada"), ts.dial("Bob")
	joinAll(room, ada, bob)

	// The server stops reading at the frame header; the write may fail once
	// the server has closed the connection.
	ada.conn.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte(" "), 1<<20+1))
	ada.expectClose(websocket.CloseMessageTooBig)
	expectPeerLeft(bob, ada, signaling.ReasonDisconnected)
}

func TestOrigin(t *testing.T) {
	t.Parallel()
	sig := fastSignaling()
	sig.AllowedOrigins = []string{"https://app.example.com", "http://localhost:3000/"}
	ts := startServer(t, defaultRooms(), sig, nil)
	room := ts.createRoom()

	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true}, // not a browser
		{ts.http.URL, true},
		{strings.ToUpper(ts.http.URL), true},
		{"https://app.example.com", true},
		{"https://APP.example.com/", true},
		{"http://localhost:3000", true},
		{"https://evil.example.com", false},
		{"http://app.example.com", false},
		{"https://app.example.com.evil.example", false},
		{"http://127.0.0.1:1", false},
		{"null", false},
		{"%zz", false},
	} {
		c, resp, err := ts.dialOrigin("Ada", tc.origin)
		if !tc.ok {
			if err == nil {
				t.Errorf("Origin %q: WebSocket accepted, want 403", tc.origin)
				continue
			}
			if resp == nil || resp.StatusCode != http.StatusForbidden {
				t.Errorf("Origin %q: %v (%v), want 403", tc.origin, err, resp)
			}
			continue
		}
		if err != nil {
			t.Errorf("Origin %q: %v (%v), want the WebSocket accepted", tc.origin, err, resp)
			continue
		}
		c.join(room)
		c.close()
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	room := ts.createRoom()
	ada, bob, cy := ts.dial("Ada"), ts.dial("Bob"), ts.dial("Cy")
	joinAll(room, ada, bob) // Cy stays outside any room

	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	start := time.Now()
	if err := ts.sig.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
	// Each client gets bye, then the close frame, and nothing between.
	for _, c := range []*wsClient{ada, bob, cy} {
		if m := c.expect(signaling.TypeBye); m.Reason == "" {
			t.Errorf("%s: bye %s without a reason", c.name, m.raw)
		}
		c.expectClose(websocket.CloseGoingAway)
	}
	if st := ts.sig.Stats(); st.Connections != 0 || st.Participants != 0 {
		t.Errorf("Stats() after Shutdown = %+v, want no connections or participants", st)
	}
	// New WebSockets are refused.
	if _, resp, err := ts.dialOrigin("Dan", ""); err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("dial after Shutdown: %v (%v), want 503", err, resp)
	}
}

// rawJoin dials and joins room with a client that has no reader: once it stops
// reading, it answers no pings and takes no messages, like a frozen browser.
func (ts *testServer) rawJoin(room, name string) (*websocket.Conn, string) {
	ts.t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(ts.wsURL(), nil)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { conn.Close() })
	if err := conn.WriteJSON(map[string]string{"type": "join", "room": room, "name": name}); err != nil {
		ts.t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(waitLong))
	var m msg
	if err := conn.ReadJSON(&m); err != nil || m.Type != signaling.TypeJoined {
		ts.t.Fatalf("%s: join: %v %+v", name, err, m)
	}
	return conn, m.ID
}

func TestVanishedPeer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		sig    config.Signaling
		vanish func(*websocket.Conn)
		reason string
		within time.Duration
	}{
		{"socket closed without a close frame", fastSignaling(), func(c *websocket.Conn) { c.NetConn().Close() }, signaling.ReasonDisconnected, time.Second},
		{"frozen with fast timers", fastSignaling(), func(*websocket.Conn) {}, signaling.ReasonTimeout, fastSignaling().PeerTimeout + time.Second},
		// The promise, with the settings parley runs on by default.
		{"frozen with default timers", config.Default().Signaling, func(*websocket.Conn) {}, signaling.ReasonTimeout, 15 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, defaultRooms(), tc.sig, nil)
			room := ts.createRoom()
			ada := ts.dial("Ada")
			ada.join(room)
			conn, id := ts.rawJoin(room, "Ghost")
			ada.expect(signaling.TypePeerJoined)

			start := time.Now()
			tc.vanish(conn)
			select {
			case m, ok := <-ada.in:
				if !ok || m.Type != signaling.TypePeerLeft || m.ID != id || m.Reason != tc.reason {
					t.Fatalf("Ada got %s (%v), want peer-left of the ghost with reason %s", m.raw, ada.err, tc.reason)
				}
			case <-time.After(tc.within):
				t.Fatalf("no peer-left within %v", tc.within)
			}
			t.Logf("peer-left %s after %v", tc.reason, time.Since(start).Round(time.Millisecond))
			// Ada, who answers pings, is still connected.
			ada.expectNothing(0)
			ts.waitStats(signaling.Stats{Rooms: 1, Participants: 1, Connections: 1})
		})
	}
}

// TestSlowClient fills the queue of a participant who never reads: it is
// disconnected, and the others' relays stay timely meanwhile.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	sig := fastSignaling()
	sig.PingInterval, sig.PeerTimeout = 10*time.Second, time.Minute // only the queue may end the slow one
	ts := startServer(t, defaultRooms(), sig, nil)
	room := ts.createRoom()
	ada, bob := ts.dial("Ada"), ts.dial("Bob")
	joinAll(room, ada, bob)
	_, slowID := ts.rawJoin(room, "Slow")
	ada.expect(signaling.TypePeerJoined)
	bob.expect(signaling.TypePeerJoined)

	sdp := strings.Repeat("s", 16<<10)
	start := time.Now()
	var slowest time.Duration
	// Ada relays far more to Slow than its socket buffers and queue hold; every
	// 50 messages Bob and Ada exchange an offer, which must stay quick.
	gone := 0
	for i := 0; gone < 2; i++ {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("slow client not disconnected after %d messages", i)
		}
		if gone == 0 {
			ada.send(map[string]string{"type": "offer", "to": slowID, "sdp": sdp})
		}
		if i%50 != 0 {
			continue
		}
		probe := fmt.Sprintf("probe %d", i)
		sent := time.Now()
		bob.offer(ada, probe)
		for _, c := range []*wsClient{ada, bob} {
			for {
				m := c.next()
				if m.Type == signaling.TypePeerLeft {
					if m.ID != slowID || m.Reason != signaling.ReasonDisconnected {
						t.Fatalf("%s got %s, want peer-left of Slow", c.name, m.raw)
					}
					gone++
					continue
				}
				if m.Type == signaling.TypeError && m.Code == signaling.CodePeerNotFound {
					continue // Ada's offers to Slow after it left
				}
				if c == ada && m.Type == signaling.TypeOffer && m.SDP == probe {
					ada.send(map[string]string{"type": "answer", "to": bob.id, "sdp": probe})
					break
				}
				if c == bob && m.Type == signaling.TypeAnswer && m.SDP == probe {
					break
				}
				t.Fatalf("%s got unexpected %.200s", c.name, m.raw)
			}
		}
		slowest = max(slowest, time.Since(sent))
	}
	t.Logf("slow client gone after %v; slowest round trip between the others %v", time.Since(start).Round(time.Millisecond), slowest)
	// Waiting behind Slow would cost the write timeout (5 s); allow for a
	// machine busy with other tests.
	if slowest > 2*time.Second {
		t.Errorf("a round trip between Ada and Bob took %v while Slow was stuck", slowest)
	}
	ts.waitStats(signaling.Stats{Rooms: 1, Participants: 2, Connections: 2})
}

// TestJoinedComesFirst joins many participants to one room at once: whatever
// the interleaving, each one hears joined before anything about the others.
func TestJoinedComesFirst(t *testing.T) {
	t.Parallel()
	ts := startServer(t, defaultRooms(), fastSignaling(), nil)
	for range 10 {
		room := ts.createRoom()
		clients := make([]*wsClient, defaultRooms().MaxParticipants)
		for i := range clients {
			clients[i] = ts.dial(fmt.Sprintf("P%d", i))
		}
		var wg sync.WaitGroup
		for _, c := range clients {
			wg.Go(func() {
				c.conn.WriteJSON(map[string]string{"type": "join", "room": room, "name": c.name})
			})
		}
		wg.Wait()
		for _, c := range clients {
			m := c.expect(signaling.TypeJoined)
			for range len(clients) - 1 - len(m.Peers) {
				c.expect(signaling.TypePeerJoined)
			}
		}
		for _, c := range clients {
			c.close()
		}
	}
}
