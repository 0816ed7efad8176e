package metrics_test

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/parley-chat/parley/metrics"
	"github.com/parley-chat/parley/sfu"
	"github.com/parley-chat/parley/signaling"
	"github.com/parley-chat/parley/turn"
)

type fakeSignaling struct {
	st signaling.Stats
	n  signaling.Counters
}

func (f *fakeSignaling) Stats() signaling.Stats       { return f.st }
func (f *fakeSignaling) Counters() signaling.Counters { return f.n }

type fakeTURN struct{ st turn.Stats }

func (f *fakeTURN) Stats() turn.Stats { return f.st }

type fakeSFU struct{ st sfu.Stats }

func (f *fakeSFU) Stats() sfu.Stats { return f.st }

func sources() (*fakeSignaling, *fakeTURN, *fakeSFU) {
	sig := &fakeSignaling{
		st: signaling.Stats{Rooms: 2, Participants: 3, Connections: 4},
		n: signaling.Counters{
			ParticipantsByMode: map[string]int{"p2p": 2, "sfu": 1},
			RoomsCreated:       5,
			ConnectionsTotal:   9,
			Messages:           map[string]uint64{"join": 3, "offer": 7, "invalid": 1},
			Errors:             map[string]uint64{"bad_message": 1, "room_full": 0},
			HTTPErrors:         map[string]uint64{"too_many_rooms": 2},
		},
	}
	tu := &fakeTURN{st: turn.Stats{Allocations: 1, AllocationsTotal: 6, BytesToPeers: 1000, BytesFromPeers: 2000, PacketsToPeers: 10, PacketsFromPeers: 20}}
	sf := &fakeSFU{st: sfu.Stats{Rooms: 1, Participants: map[string]int{"r": 3}, Tracks: 6, Forwards: 12,
		ForwardedPackets: 100, ForwardedBytes: 100000, DroppedPackets: 2, NACKsReceived: 3, NACKsSent: 4,
		Retransmitted: 5, KeyframeRequests: 6, PLIsSent: 7, REMBsSent: 8}}
	return sig, tu, sf
}

func TestValuesAndNames(t *testing.T) {
	sig, tu, sf := sources()
	reg := metrics.New(metrics.Sources{Signaling: sig, TURN: tu, SFU: sf}, metrics.BuildInfo{Version: "v1.2.3", Revision: "abc", GoVersion: "go1.26"})

	want := `
# HELP parley_participants Participants in a room now, by the room's mode (p2p or sfu).
# TYPE parley_participants gauge
parley_participants{mode="p2p"} 2
parley_participants{mode="sfu"} 1
# HELP parley_rooms Rooms that exist now (joinable, with or without participants).
# TYPE parley_rooms gauge
parley_rooms 2
# HELP parley_signaling_messages_total Signaling messages handled, by type (invalid: frames that did not decode).
# TYPE parley_signaling_messages_total counter
parley_signaling_messages_total{type="invalid"} 1
parley_signaling_messages_total{type="join"} 3
parley_signaling_messages_total{type="offer"} 7
# HELP parley_turn_relayed_bytes_total Payload bytes relayed by TURN, by direction (to_peer: from clients to peers).
# TYPE parley_turn_relayed_bytes_total counter
parley_turn_relayed_bytes_total{direction="from_peer"} 2000
parley_turn_relayed_bytes_total{direction="to_peer"} 1000
# HELP parley_sfu_participants Participants connected to the SFU now.
# TYPE parley_sfu_participants gauge
parley_sfu_participants 3
# HELP parley_sfu_nacks_received_total Sequence numbers subscribers asked the SFU to resend.
# TYPE parley_sfu_nacks_received_total counter
parley_sfu_nacks_received_total 3
# HELP parley_build_info Always 1; the labels say which build of Parley is running.
# TYPE parley_build_info gauge
parley_build_info{goversion="go1.26",revision="abc",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"parley_participants", "parley_rooms", "parley_signaling_messages_total", "parley_turn_relayed_bytes_total",
		"parley_sfu_participants", "parley_sfu_nacks_received_total", "parley_build_info"); err != nil {
		t.Error(err)
	}

	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sawGo, sawSFU, sawTURN bool
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, metrics.Prefix) {
			t.Errorf("metric %s does not start with %s", name, metrics.Prefix)
		}
		sawGo = sawGo || strings.HasPrefix(name, "parley_go_")
		sawSFU = sawSFU || strings.HasPrefix(name, "parley_sfu_")
		sawTURN = sawTURN || strings.HasPrefix(name, "parley_turn_")
	}
	if !sawGo || !sawSFU || !sawTURN {
		t.Errorf("go runtime %v, sfu %v, turn %v metrics present; want all", sawGo, sawSFU, sawTURN)
	}
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "parley_go_") || strings.HasPrefix(p.Metric, "parley_process_") {
			continue // the client library's own
		}
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestMissingSourcesAreLeftOut(t *testing.T) {
	sig, _, _ := sources()
	reg := metrics.New(metrics.Sources{Signaling: sig}, metrics.BuildInfo{})
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "parley_turn_") || strings.HasPrefix(f.GetName(), "parley_sfu_") {
			t.Errorf("%s exported without its source", f.GetName())
		}
	}
}

func TestToken(t *testing.T) {
	sig, _, _ := sources()
	reg := metrics.New(metrics.Sources{Signaling: sig}, metrics.BuildInfo{})
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	for _, tc := range []struct {
		name, token, auth string
		status            int
	}{
		{"no token configured", "", "", 200},
		{"missing", "t0ken", "", 401},
		{"wrong", "t0ken", "Bearer t0ke", 401},
		{"wrong scheme", "t0ken", "Basic t0ken", 401},
		{"right", "t0ken", "Bearer t0ken", 200},
		{"right, lower-case scheme", "t0ken", "bearer t0ken", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(metrics.Handler(reg, tc.token, log))
			defer srv.Close()
			req, _ := http.NewRequest("GET", srv.URL+"/metrics", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := strings.Contains(string(body), "parley_rooms 2"); got != (tc.status == 200) {
				t.Errorf("body has metrics: %v, want %v", got, tc.status == 200)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
}
