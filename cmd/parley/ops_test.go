package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	pionturn "github.com/pion/turn/v5"

	"github.com/parley-chat/parley/signaling"
	"github.com/parley-chat/parley/turn"
)

// scrape fetches /metrics with the given bearer token ("" sends none) and
// returns the status and every sample, keyed as the text format writes it:
// `name{label="value",...}`.
func scrape(t *testing.T, url, token string) (int, map[string]float64) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	samples := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			samples[line[:i]] = v
		}
	}
	return resp.StatusCode, samples
}

// metricsWatcher checks metric values of a running parley.
type metricsWatcher struct {
	t     *testing.T
	url   string
	token string
	last  map[string]float64
}

func (m *metricsWatcher) scrape() map[string]float64 {
	m.t.Helper()
	status, samples := scrape(m.t, m.url, m.token)
	if status != http.StatusOK {
		m.t.Fatalf("GET /metrics = %d", status)
	}
	m.last = samples
	return samples
}

// expect checks that each metric has its value now.
func (m *metricsWatcher) expect(want map[string]float64) {
	m.t.Helper()
	got := m.scrape()
	for k, v := range want {
		if got[k] != v {
			m.t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

// await polls until each metric has its value: what follows a closed
// connection happens after the close, in the server's own time.
func (m *metricsWatcher) await(want map[string]float64) {
	m.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := m.scrape()
		missing := ""
		for k, v := range want {
			if got[k] != v {
				missing += " " + k + "=" + strconv.FormatFloat(got[k], 'g', -1, 64)
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("after 5s still:%s; want %v", missing, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsFollowACall runs parley with TURN and a metrics token, and
// checks that /metrics moves as two participants join a room, exchange
// messages (one bad), allocate a TURN relay with the credentials they were
// given, and leave.
func TestMetricsFollowACall(t *testing.T) {
	cfg := testConfig(t)
	cfg.PublicIP = "127.0.0.1"
	cfg.TURN.Enabled = true
	cfg.TURN.Listen = "127.0.0.1:0"
	cfg.Metrics.Token = "scrape-me"
	ctx, cancel := context.WithCancel(context.Background())
	base, done := startRun(t, ctx, cfg)
	defer func() {
		cancel()
		<-done
	}()
	m := &metricsWatcher{t: t, url: base + "/metrics", token: cfg.Metrics.Token}

	// The token guards /metrics on the main listener.
	for _, token := range []string{"", "scrape-mE"} {
		if status, samples := scrape(t, m.url, token); status != http.StatusUnauthorized || len(samples) != 0 {
			t.Errorf("GET /metrics with token %q = %d and %d samples, want 401 and none", token, status, len(samples))
		}
	}
	if resp, err := http.Get(base + "/readyz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /readyz = %v %v, want 200", resp, err)
	}

	m.expect(map[string]float64{
		"parley_rooms": 0, `parley_participants{mode="p2p"}`: 0, `parley_participants{mode="sfu"}`: 0,
		"parley_websocket_connections": 0, "parley_turn_allocations": 0, "parley_sfu_participants": 0,
	})
	before := m.last

	resp, err := http.Post(base+"/api/rooms", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var room struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&room)
	resp.Body.Close()
	m.expect(map[string]float64{"parley_rooms": 1, "parley_rooms_created_total": 1})

	ws := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	dial := func(name string) (*websocket.Conn, map[string]any) {
		c, _, err := websocket.DefaultDialer.Dial(ws, nil)
		if err != nil {
			t.Fatal(err)
		}
		c.WriteJSON(map[string]string{"type": "join", "room": room.ID, "name": name})
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var joined map[string]any
		if err := c.ReadJSON(&joined); err != nil || joined["type"] != "joined" {
			t.Fatalf("%s: join: %v %v", name, joined, err)
		}
		return c, joined
	}
	ada, joined := dial("Ada")
	defer ada.Close()
	bob, _ := dial("Bob")
	defer bob.Close()
	m.expect(map[string]float64{
		`parley_participants{mode="p2p"}`: 2, "parley_websocket_connections": 2, "parley_websocket_connections_total": 2,
		`parley_signaling_messages_total{type="join"}`: before[`parley_signaling_messages_total{type="join"}`] + 2,
	})

	// A bad message is counted by its error code, and as invalid.
	ada.WriteMessage(websocket.TextMessage, []byte(`{"type":`))
	for {
		var e map[string]any
		if err := ada.ReadJSON(&e); err != nil {
			t.Fatal(err)
		}
		if e["type"] == "peer-joined" {
			continue
		}
		if e["code"] != signaling.CodeBadMessage {
			t.Fatalf("bad message: got %v, want error bad_message", e)
		}
		break
	}
	m.expect(map[string]float64{
		`parley_signaling_errors_total{code="bad_message"}`:    before[`parley_signaling_errors_total{code="bad_message"}`] + 1,
		`parley_signaling_messages_total{type="invalid"}`:      before[`parley_signaling_messages_total{type="invalid"}`] + 1,
		`parley_signaling_errors_total{code="room_not_found"}`: 0,
	})

	// Ada allocates a relay with the TURN credentials she was given.
	relay := allocateFromJoined(t, joined)
	m.expect(map[string]float64{"parley_turn_allocations": 1, "parley_turn_allocations_total": 1})
	relay.Close() // deletes the allocation (refresh with lifetime 0)
	m.await(map[string]float64{"parley_turn_allocations": 0, "parley_turn_allocations_total": 1})

	// Both leave: the room stays (joinable until its TTL), empty.
	ada.Close()
	bob.Close()
	m.await(map[string]float64{
		`parley_participants{mode="p2p"}`: 0, "parley_websocket_connections": 0, "parley_rooms": 1,
		"parley_websocket_connections_total": 2,
	})
}

// allocateFromJoined allocates a TURN relay over UDP with the first turn:
// server and credentials of a joined message.
func allocateFromJoined(t *testing.T, joined map[string]any) net.PacketConn {
	t.Helper()
	servers, _ := joined["iceServers"].([]any)
	for _, s := range servers {
		srv, _ := s.(map[string]any)
		urls, _ := srv["urls"].([]any)
		for _, u := range urls {
			us, _ := u.(string)
			if !strings.HasPrefix(us, "turn:") || !strings.HasSuffix(us, "?transport=udp") {
				continue
			}
			addr := strings.TrimSuffix(strings.TrimPrefix(us, "turn:"), "?transport=udp")
			conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() })
			client, err := pionturn.NewClient(&pionturn.ClientConfig{
				STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
				Username: srv["username"].(string), Password: srv["credential"].(string),
				LoggerFactory: turn.NewLoggerFactory(testLogger(t)),
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(client.Close)
			if err := client.Listen(); err != nil {
				t.Fatal(err)
			}
			relay, err := client.Allocate()
			if err != nil {
				t.Fatalf("allocate at %s: %v", addr, err)
			}
			return relay
		}
	}
	t.Fatalf("no turn: UDP server in %v", servers)
	return nil
}

// TestMetricsListenerAndReadiness serves /metrics on a listener of its own,
// with a token, and checks /readyz through start, a TURN that does not
// answer, and shutdown.
func TestMetricsListenerAndReadiness(t *testing.T) {
	cfg := testConfig(t)
	cfg.Metrics.Listen = "127.0.0.1:0"
	cfg.Metrics.Token = "t0ken"
	ln, err := listenMetrics(cfg)
	if err != nil {
		t.Fatal(err)
	}
	sig := signaling.New(cfg.Rooms, cfg.Signaling, nil, testLogger(t))
	defer sig.Close()
	o := newOps(cfg, ln, sig, nil, nil, testLogger(t))
	mux := http.NewServeMux()
	o.mount(mux)
	main := httptest.NewServer(mux)
	defer main.Close()
	own := "http://" + ln.Addr().String()

	get := func(u string) (int, string) {
		t.Helper()
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := get(main.URL + "/readyz"); status != http.StatusServiceUnavailable || !strings.Contains(body, "starting") {
		t.Errorf("/readyz before start = %d %q, want 503 starting", status, body)
	}
	o.start()
	defer o.shutdown(context.Background())

	if status, _ := scrape(t, own+"/metrics", ""); status != http.StatusUnauthorized {
		t.Errorf("own listener /metrics without token = %d, want 401", status)
	}
	if status, samples := scrape(t, own+"/metrics", "t0ken"); status != http.StatusOK || samples["parley_rooms"] != 0 || len(samples) < 20 {
		t.Errorf("own listener /metrics = %d with %d samples, want 200 with parley_rooms", status, len(samples))
	}
	if status, _ := get(main.URL + "/metrics"); status != http.StatusNotFound {
		t.Errorf("main listener /metrics = %d, want 404 when --metrics-listen is set", status)
	}
	for _, u := range []string{own + "/readyz", own + "/healthz", main.URL + "/readyz"} {
		if status, body := get(u); status != http.StatusOK {
			t.Errorf("GET %s = %d %q, want 200", u, status, body)
		}
	}

	// A TURN listener that does not answer makes the server unready.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.probeMu.Lock()
	o.turnProbe, o.probedAt = dead.LocalAddr().String(), time.Time{}
	o.probeMu.Unlock()
	if status, body := get(main.URL + "/readyz"); status != http.StatusServiceUnavailable || !strings.Contains(body, "turn:") {
		t.Errorf("/readyz with a silent TURN = %d %q, want 503 naming turn", status, body)
	}
	dead.Close()
	o.probeMu.Lock()
	o.turnProbe = ""
	o.probeMu.Unlock()

	o.shutdown(context.Background())
	if status, body := get(main.URL + "/readyz"); status != http.StatusServiceUnavailable || !strings.Contains(body, "shutting down") {
		t.Errorf("/readyz after shutdown = %d %q, want 503 shutting down", status, body)
	}
	if _, err := http.Get(own + "/metrics"); err == nil {
		t.Error("metrics listener still serving after shutdown")
	}
}
