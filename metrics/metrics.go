// Package metrics describes a running Parley in the Prometheus text format.
//
// It keeps no counters of its own. At each scrape a collector reads the
// snapshots that the other parts already keep (signaling's Stats and
// Counters, turn's Stats, sfu's Stats) and turns them into metrics, so the
// numbers cannot drift from what the parts report in their logs and tests.
// Every metric name starts with "parley_"; the Go runtime and process
// metrics are registered under that prefix too (parley_go_*,
// parley_process_*). The registry is the package's own, never Prometheus's
// global default.
package metrics

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/sfu"
	"github.com/parley-chat/parley/signaling"
	"github.com/parley-chat/parley/turn"
)

// Prefix starts every metric name.
const Prefix = "parley_"

// SignalingSource is what the signaling metrics are read from;
// *signaling.Server satisfies it.
type SignalingSource interface {
	Stats() signaling.Stats
	Counters() signaling.Counters
}

// TURNSource is what the TURN metrics are read from; *turn.Server
// satisfies it.
type TURNSource interface {
	Stats() turn.Stats
}

// SFUSource is what the SFU metrics are read from; *sfu.SFU satisfies it.
type SFUSource interface {
	Stats() sfu.Stats
}

// Sources are the parts a scrape reads. A nil source leaves its metrics out
// (a server without the built-in TURN has no parley_turn_*). Beware of a nil
// pointer in a non-nil interface: set a field only when the part exists.
type Sources struct {
	Signaling SignalingSource
	TURN      TURNSource
	SFU       SFUSource
}

// BuildInfo labels parley_build_info.
type BuildInfo struct {
	Version   string // module version, "(devel)" for a build from a work tree
	Revision  string // VCS revision, "" when unknown
	GoVersion string
}

// New returns a registry with Parley's metrics read from src, the build
// information, and the Go runtime and process metrics.
func New(src Sources, build BuildInfo) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(src))
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: Prefix + "build_info",
		Help: "Always 1; the labels say which build of Parley is running.",
		ConstLabels: prometheus.Labels{
			"version": build.Version, "revision": build.Revision, "goversion": build.GoVersion,
		},
	})
	bi.Set(1)
	reg.MustRegister(bi)
	prometheus.WrapRegistererWithPrefix(Prefix, reg).MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return reg
}

// Handler serves the metrics of g. With a token, a request must carry
// "Authorization: Bearer TOKEN" or it gets 401; the comparison takes the same
// time wherever the tokens differ.
func Handler(g prometheus.Gatherer, token string, log *slog.Logger) http.Handler {
	h := promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
	if token == "" {
		return h
	}
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="parley metrics"`)
			http.Error(w, "401 unauthorized: /metrics needs Authorization: Bearer <metrics token>", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// collector turns the sources' snapshots into metrics at each scrape.
type collector struct {
	src   Sources // static
	descs []*prometheus.Desc
	// Static after newCollector.
	rooms, participants, connections, connectionsTotal, roomsCreated,
	messages, errors, apiErrors, slowClients *prometheus.Desc
	turnAllocations, turnAllocationsTotal, turnBytes, turnPackets, turnPermissions,
	turnChannels, turnQuotaRefusals, turnAuthFailures, turnPermissionsDenied,
	turnPacketsDenied, turnTCPConnections *prometheus.Desc
	sfuRooms, sfuParticipants, sfuTracks, sfuForwards, sfuPackets, sfuBytes,
	sfuDropped, sfuNACKsReceived, sfuNACKsSent, sfuRetransmitted, sfuKeyframeRequests,
	sfuPLIsSent, sfuREMBsSent *prometheus.Desc
}

func newCollector(src Sources) *collector {
	c := &collector{src: src}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		d := prometheus.NewDesc(Prefix+name, help, labels, nil)
		c.descs = append(c.descs, d)
		return d
	}
	if src.Signaling != nil {
		c.rooms = desc("rooms", "Rooms that exist now (joinable, with or without participants).")
		c.participants = desc("participants", "Participants in a room now, by the room's mode (p2p or sfu).", "mode")
		c.connections = desc("websocket_connections", "Signaling WebSockets open now.")
		c.connectionsTotal = desc("websocket_connections_total", "Signaling WebSockets accepted since start.")
		c.roomsCreated = desc("rooms_created_total", "Rooms created through the API since start.")
		c.messages = desc("signaling_messages_total", "Signaling messages handled, by type (invalid: frames that did not decode).", "type")
		c.errors = desc("signaling_errors_total", "Error messages sent on signaling WebSockets, by code.", "code")
		c.apiErrors = desc("api_errors_total", "HTTP API requests and WebSocket upgrades refused, by code.", "code")
		c.slowClients = desc("signaling_slow_clients_total", "WebSockets closed because their send queue filled.")
	}
	if src.TURN != nil {
		c.turnAllocations = desc("turn_allocations", "TURN allocations now.")
		c.turnAllocationsTotal = desc("turn_allocations_total", "TURN allocations created since start.")
		c.turnBytes = desc("turn_relayed_bytes_total", "Payload bytes relayed by TURN, by direction (to_peer: from clients to peers).", "direction")
		c.turnPackets = desc("turn_relayed_packets_total", "Packets relayed by TURN, by direction (from_peer includes packets pion drops for lack of a permission).", "direction")
		c.turnPermissions = desc("turn_permissions", "TURN permissions now.")
		c.turnChannels = desc("turn_channels", "TURN channel bindings now.")
		c.turnQuotaRefusals = desc("turn_quota_refusals_total", "TURN Allocate requests refused by the per-user or total quota.")
		c.turnAuthFailures = desc("turn_auth_failures_total", "TURN requests with a malformed, expired or forged credential.")
		c.turnPermissionsDenied = desc("turn_permissions_denied_total", "TURN permissions and channel binds refused by the relay policy.")
		c.turnPacketsDenied = desc("turn_packets_denied_total", "Relayed packets to the server's own addresses dropped by the policy.")
		c.turnTCPConnections = desc("turn_tcp_connections", "TURN TCP and TLS connections open now.")
	}
	if src.SFU != nil {
		c.sfuRooms = desc("sfu_rooms", "SFU rooms with at least one participant connected to the SFU.")
		c.sfuParticipants = desc("sfu_participants", "Participants connected to the SFU now.")
		c.sfuTracks = desc("sfu_tracks", "Tracks published to the SFU now.")
		c.sfuForwards = desc("sfu_forwarded_tracks", "Forwarded copies of published tracks now (track × subscriber).")
		c.sfuPackets = desc("sfu_forwarded_packets_total", "RTP packets the SFU wrote to subscribers.")
		c.sfuBytes = desc("sfu_forwarded_bytes_total", "Bytes (RTP header and payload) the SFU wrote to subscribers.")
		c.sfuDropped = desc("sfu_dropped_packets_total", "RTP packets dropped because a subscriber's queue was full.")
		c.sfuNACKsReceived = desc("sfu_nacks_received_total", "Sequence numbers subscribers asked the SFU to resend.")
		c.sfuNACKsSent = desc("sfu_nacks_sent_total", "Sequence numbers the SFU asked publishers to resend.")
		c.sfuRetransmitted = desc("sfu_retransmitted_packets_total", "Packets resent to subscribers from the SFU's cache.")
		c.sfuKeyframeRequests = desc("sfu_keyframe_requests_received_total", "PLI and FIR received from subscribers.")
		c.sfuPLIsSent = desc("sfu_plis_sent_total", "Keyframe requests (PLI) sent to publishers, after rate limiting.")
		c.sfuREMBsSent = desc("sfu_rembs_sent_total", "Bitrate limits (REMB) sent to publishers.")
	}
	return c
}

// Describe sends every metric's description.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

// Collect reads the sources and sends their values.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	if s := c.src.Signaling; s != nil {
		st, n := s.Stats(), s.Counters()
		gauge(c.rooms, float64(st.Rooms))
		for _, mode := range []string{config.ModeP2P, config.ModeSFU} {
			gauge(c.participants, float64(n.ParticipantsByMode[mode]), mode)
		}
		gauge(c.connections, float64(st.Connections))
		counter(c.connectionsTotal, n.ConnectionsTotal)
		counter(c.roomsCreated, n.RoomsCreated)
		for typ, v := range n.Messages {
			counter(c.messages, v, typ)
		}
		for code, v := range n.Errors {
			counter(c.errors, v, code)
		}
		for code, v := range n.HTTPErrors {
			counter(c.apiErrors, v, code)
		}
		counter(c.slowClients, n.SlowClients)
	}

	if t := c.src.TURN; t != nil {
		st := t.Stats()
		gauge(c.turnAllocations, float64(st.Allocations))
		counter(c.turnAllocationsTotal, st.AllocationsTotal)
		counter(c.turnBytes, st.BytesToPeers, "to_peer")
		counter(c.turnBytes, st.BytesFromPeers, "from_peer")
		counter(c.turnPackets, st.PacketsToPeers, "to_peer")
		counter(c.turnPackets, st.PacketsFromPeers, "from_peer")
		gauge(c.turnPermissions, float64(st.Permissions))
		gauge(c.turnChannels, float64(st.Channels))
		counter(c.turnQuotaRefusals, st.QuotaRefusals)
		counter(c.turnAuthFailures, st.AuthFailures)
		counter(c.turnPermissionsDenied, st.PermissionsDenied)
		counter(c.turnPacketsDenied, st.PacketsDenied)
		gauge(c.turnTCPConnections, float64(st.TCPConnections))
	}

	if f := c.src.SFU; f != nil {
		st := f.Stats()
		participants := 0
		for _, n := range st.Participants {
			participants += n
		}
		gauge(c.sfuRooms, float64(st.Rooms))
		gauge(c.sfuParticipants, float64(participants))
		gauge(c.sfuTracks, float64(st.Tracks))
		gauge(c.sfuForwards, float64(st.Forwards))
		counter(c.sfuPackets, st.ForwardedPackets)
		counter(c.sfuBytes, st.ForwardedBytes)
		counter(c.sfuDropped, st.DroppedPackets)
		counter(c.sfuNACKsReceived, st.NACKsReceived)
		counter(c.sfuNACKsSent, st.NACKsSent)
		counter(c.sfuRetransmitted, st.Retransmitted)
		counter(c.sfuKeyframeRequests, st.KeyframeRequests)
		counter(c.sfuPLIsSent, st.PLIsSent)
		counter(c.sfuREMBsSent, st.REMBsSent)
	}
}
