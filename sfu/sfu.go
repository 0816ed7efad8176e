// Package sfu is Parley's selective forwarding unit: each participant of an
// SFU room has one PeerConnection to the server, sends each of its tracks
// once, and receives everyone else's tracks from the server.
//
// The package knows nothing of WebSockets: the signaling layer calls Join
// when someone enters a room, passes the browser's offers, answers and
// candidates to the Participant, and gets the server's through the Signaler
// it gave to Join. The browser offers first (right after joining); from then
// on the server offers whenever the tracks it forwards to that browser
// change. The server is the impolite side of perfect negotiation.
package sfu

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// ErrClosed is returned by the methods of a Participant that has left or
// whose PeerConnection has closed, and by Join after SFU.Close.
var ErrClosed = errors.New("sfu: closed")

// Options configure an SFU.
type Options struct {
	// PublicIP, when set, is advertised to browsers as an address of the
	// media ports, in addition to the addresses they are bound to: the
	// public side of a 1:1 NAT (a cloud VM's elastic IP), or simply the
	// address a firewall forwards.
	PublicIP string
	// QueueSize is the number of packets each forwarded track may have
	// waiting for its subscriber's connection; beyond it packets are dropped
	// and counted. 0 means 256 (about 2.5 s of 1 Mbit/s video).
	QueueSize int
}

// rembInterval is how often each publisher is told the bitrate its weakest
// subscriber can take.
const rembInterval = time.Second

// SFU forwards media between the participants of its rooms.
type SFU struct {
	// Static after construction.
	log       *slog.Logger
	listeners *Listeners
	settings  webrtc.SettingEngine
	pionLogs  loggerFactory
	queueSize int
	fanQueues []chan fanJob // set by New, then static
	done      chan struct{} // closed by Close

	stats counters

	// wg counts the goroutines the SFU starts or runs its code on (read
	// loops run on pion's OnTrack goroutine). Add only under mu while
	// !closed, so that Close's Wait cannot race with an Add.
	wg sync.WaitGroup

	mu     sync.Mutex
	rooms  map[string]*room // Guarded by mu.
	closed bool             // Guarded by mu.
}

// room is a set of participants that receive each other's tracks. Rooms are
// created on the first Join and removed when the last participant leaves.
type room struct {
	id string // Static.
	// Guarded by SFU.mu.
	participants map[string]*Participant
	tracks       []*pubTrack // in publishing order, so m-lines come in a stable order
}

// counters are the SFU's running totals; see Stats.
type counters struct {
	forwardedPackets atomic.Uint64
	forwardedBytes   atomic.Uint64
	dropped          atomic.Uint64
	nacksReceived    atomic.Uint64
	retransmitted    atomic.Uint64
	nacksSent        atomic.Uint64
	keyframeRequests atomic.Uint64
	plisSent         atomic.Uint64
	rembsSent        atomic.Uint64
}

// New builds an SFU on opened listeners, which it owns from then on
// (SFU.Close closes them; if New fails they are still the caller's). log
// receives the SFU's own lines and pion's.
func New(l *Listeners, opts Options, log *slog.Logger) (*SFU, error) {
	if log == nil {
		log = slog.Default()
	}
	l.logs.log.Store(log)
	s := &SFU{
		log:       log,
		listeners: l,
		pionLogs:  loggerFactory{target: l.logs},
		queueSize: opts.QueueSize,
		done:      make(chan struct{}),
		rooms:     map[string]*room{},
	}
	if s.queueSize <= 0 {
		s.queueSize = 256
	}

	se := webrtc.SettingEngine{LoggerFactory: s.pionLogs}
	se.SetICEUDPMux(l.udpMux)
	se.SetICETCPMux(l.tcpMux)
	se.SetNetworkTypes([]webrtc.NetworkType{
		webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6, webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6,
	})
	se.SetIncludeLoopbackCandidate(l.loopback)
	// No sockets besides the two listeners: no mDNS (browsers' .local
	// candidates are useless to a server anyway, it learns their address
	// from their checks), no active ICE-TCP dialling out.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.DisableActiveTCP(true)
	se.SetICETimeouts(iceDisconnected, iceFailed, iceKeepalive)
	se.DisableMediaEngineCopy(true) // one PeerConnection per API
	if opts.PublicIP != "" {
		ip := net.ParseIP(opts.PublicIP)
		if ip == nil {
			return nil, fmt.Errorf("sfu: public IP %q is not an IP address", opts.PublicIP)
		}
		// An address the sockets are bound to is advertised anyway (and
		// pion would advertise its ICE-TCP candidate twice).
		if l.bound(ip) {
			opts.PublicIP = ""
		}
	}
	if opts.PublicIP != "" {
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        []string{opts.PublicIP},
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteAppend,
		}); err != nil {
			return nil, fmt.Errorf("sfu: public IP %s: %w", opts.PublicIP, err)
		}
	}
	s.settings = se

	s.startFanout()
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.rembLoop()
	}()
	go func() {
		defer s.wg.Done()
		s.watchLoop()
	}()
	return s, nil
}

// Close closes every PeerConnection and the listeners, and waits for the
// SFU's goroutines to end.
func (s *SFU) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	var all []*Participant
	for _, r := range s.rooms {
		all = slices.AppendSeq(all, maps.Values(r.participants))
	}
	s.mu.Unlock()

	close(s.done)
	for _, p := range all {
		p.Close()
	}
	s.wg.Wait()
	return s.listeners.Close()
}

// Join adds a participant to a room, creating the room on its first
// participant. The browser is expected to send its offer next. sig is how
// the SFU talks back to that browser; see Signaler.
func (s *SFU) Join(roomID, participantID string, sig Signaler) (*Participant, error) {
	if sig == nil {
		return nil, errors.New("sfu: join: nil Signaler")
	}
	p, err := newParticipant(s, participantID, sig)
	if err != nil {
		return nil, fmt.Errorf("sfu: join room %s: %w", roomID, err)
	}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		p.closePC()
		return nil, ErrClosed
	}
	r := s.rooms[roomID]
	if r == nil {
		r = &room{id: roomID, participants: map[string]*Participant{}}
		s.rooms[roomID] = r
	}
	if _, dup := r.participants[participantID]; dup {
		s.mu.Unlock()
		p.closePC()
		return nil, fmt.Errorf("sfu: join room %s: participant %s is already in it", roomID, participantID)
	}
	r.participants[participantID] = p
	p.room = r
	s.wg.Add(2)
	s.mu.Unlock()

	p.start()
	p.log.Info("sfu: joined", "room", roomID)
	return p, nil
}

// spawn runs f on a new goroutine that Close waits for, unless the SFU is
// closed, in which case it reports false and does nothing.
func (s *SFU) spawn(f func()) bool {
	if !s.enter() {
		return false
	}
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// enter registers the calling goroutine with wg; the caller must call
// wg.Done when it ends. It reports false once the SFU is closed.
func (s *SFU) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

// wanted returns the tracks p should receive: every track of the room but
// its own and those of participants whose connection is interrupted.
func (s *SFU) wanted(p *Participant) []*pubTrack {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.room == nil || p.room.participants[p.id] != p {
		return nil
	}
	var ts []*pubTrack
	for _, t := range p.room.tracks {
		if t.owner != p && !t.owner.hidden {
			ts = append(ts, t)
		}
	}
	return ts
}

// publish adds t to its owner's room and reports whether it did (the owner
// may have left meanwhile).
func (s *SFU) publish(t *pubTrack) bool {
	s.mu.Lock()
	r := t.owner.room
	if r == nil || r.participants[t.owner.id] != t.owner {
		s.mu.Unlock()
		return false
	}
	r.tracks = append(r.tracks, t)
	others := othersLocked(r, t.owner)
	s.mu.Unlock()
	pokeAll(others)
	return true
}

// unpublish removes t from its room.
func (s *SFU) unpublish(t *pubTrack) {
	s.mu.Lock()
	r := t.owner.room
	var others []*Participant
	if r != nil {
		if i := slices.Index(r.tracks, t); i >= 0 {
			r.tracks = slices.Delete(r.tracks, i, i+1)
			others = othersLocked(r, t.owner)
		}
	}
	s.mu.Unlock()
	pokeAll(others)
}

// setHidden takes p's tracks away from the others while its connection is
// interrupted (hidden) and gives them back when it recovers.
func (s *SFU) setHidden(p *Participant, hidden bool) {
	s.mu.Lock()
	if p.hidden == hidden || p.room == nil {
		s.mu.Unlock()
		return
	}
	p.hidden = hidden
	others := othersLocked(p.room, p)
	s.mu.Unlock()
	if hidden {
		p.log.Info("sfu: media connection interrupted, tracks hidden", "room", p.room.id)
	} else {
		p.log.Info("sfu: media connection back, tracks shown", "room", p.room.id)
	}
	pokeAll(others)
}

// leave removes p and its tracks from its room, and the room when it is
// empty.
func (s *SFU) leave(p *Participant) {
	s.mu.Lock()
	r := p.room
	if r == nil || r.participants[p.id] != p {
		s.mu.Unlock()
		return
	}
	delete(r.participants, p.id)
	r.tracks = slices.DeleteFunc(r.tracks, func(t *pubTrack) bool { return t.owner == p })
	if len(r.participants) == 0 {
		delete(s.rooms, r.id)
	}
	others := othersLocked(r, p)
	s.mu.Unlock()
	pokeAll(others)
}

func othersLocked(r *room, p *Participant) []*Participant {
	others := make([]*Participant, 0, len(r.participants))
	for _, o := range r.participants {
		if o != p {
			others = append(others, o)
		}
	}
	return others
}

func pokeAll(ps []*Participant) {
	for _, p := range ps {
		p.poke()
	}
}

// watchLoop marks participants silent when none of their media has come
// for silenceTimeout, and not silent when it comes again; the participant's
// run loop then hides or shows its tracks (see the liveness constants).
func (s *SFU) watchLoop() {
	tick := time.NewTicker(watchInterval)
	defer tick.Stop()
	var ps []*Participant
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		ps = ps[:0]
		s.mu.Lock()
		for _, r := range s.rooms {
			for _, p := range r.participants {
				ps = append(ps, p)
			}
		}
		s.mu.Unlock()
		now := time.Now().UnixNano()
		for _, p := range ps {
			heard := p.heard.Load()
			silent := heard != 0 && now-heard > int64(silenceTimeout)
			if p.silent.Swap(silent) != silent {
				p.poke()
			}
		}
	}
}

// rembLoop tells every publisher, once per rembInterval, the bitrate its
// weakest subscriber can take, so that one subscriber on a poor link gets a
// smaller stream instead of a frozen one (there is one encoding per track,
// no simulcast, so the publisher's encoder is the only knob).
func (s *SFU) rembLoop() {
	tick := time.NewTicker(rembInterval)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		byOwner := map[*Participant][]*pubTrack{}
		for _, r := range s.rooms {
			for _, t := range r.tracks {
				byOwner[t.owner] = append(byOwner[t.owner], t)
			}
		}
		s.mu.Unlock()
		now := time.Now()
		for owner, tracks := range byOwner {
			owner.sendREMB(tracks, now)
		}
	}
}

// Stats is a snapshot of the SFU's counters. Packet counts are totals since
// New; Rooms, Participants, Tracks and Forwards are current.
type Stats struct {
	Rooms        int
	Participants map[string]int // room id → participants
	Tracks       int            // tracks being published
	Forwards     int            // forwarded copies of them (track × subscriber)

	ForwardedPackets uint64 // RTP packets written to subscribers, resends included
	ForwardedBytes   uint64 // their size (RTP header and payload)
	DroppedPackets   uint64 // dropped because a subscriber's queue, or a track's forwarding queue, was full
	NACKsReceived    uint64 // sequence numbers subscribers asked to resend
	Retransmitted    uint64 // packets resent to subscribers from the cache
	NACKsSent        uint64 // sequence numbers the SFU asked publishers for
	KeyframeRequests uint64 // PLI and FIR received from subscribers
	PLIsSent         uint64 // keyframe requests sent to publishers (rate-limited)
	REMBsSent        uint64 // bitrate limits sent to publishers
}

// Stats returns the current counters.
func (s *SFU) Stats() Stats {
	st := Stats{
		Participants:     map[string]int{},
		ForwardedPackets: s.stats.forwardedPackets.Load(),
		ForwardedBytes:   s.stats.forwardedBytes.Load(),
		DroppedPackets:   s.stats.dropped.Load(),
		NACKsReceived:    s.stats.nacksReceived.Load(),
		Retransmitted:    s.stats.retransmitted.Load(),
		NACKsSent:        s.stats.nacksSent.Load(),
		KeyframeRequests: s.stats.keyframeRequests.Load(),
		PLIsSent:         s.stats.plisSent.Load(),
		REMBsSent:        s.stats.rembsSent.Load(),
	}
	s.mu.Lock()
	var tracks []*pubTrack
	for id, r := range s.rooms {
		st.Participants[id] = len(r.participants)
		tracks = append(tracks, r.tracks...)
	}
	st.Rooms = len(s.rooms)
	s.mu.Unlock()
	st.Tracks = len(tracks)
	for _, t := range tracks {
		st.Forwards += len(*t.downs.Load())
	}
	return st
}

// writeRTCP sends RTCP to a publisher, dropping it if the connection is gone.
func writeRTCP(p *Participant, pkts ...rtcp.Packet) bool {
	if err := p.pc.WriteRTCP(pkts); err != nil {
		p.log.Debug("sfu: rtcp not sent", "err", err)
		return false
	}
	return true
}
