package sfu

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Signaler is how the SFU talks to one participant's browser. The SFU calls
// it from one goroutine per participant, in order (a description before the
// candidates gathered for it), never concurrently and never with a lock
// held. The methods should queue the message and return: a slow browser
// delays only its own messages.
type Signaler interface {
	SendOffer(sdp string)
	SendAnswer(sdp string)
	SendCandidate(c webrtc.ICECandidateInit)
}

// maxEarlyCandidates bounds the candidates kept while no offer has arrived.
const maxEarlyCandidates = 64

// maxBadAnswers is how many answers in a row may fail after pion applied
// them in part before the server stops offering again by itself.
const maxBadAnswers = 3

// Participant is one member of an SFU room and its PeerConnection to the
// server.
type Participant struct {
	// Static after construction.
	sfu  *SFU
	id   string
	log  *slog.Logger
	api  *webrtc.API
	pc   *webrtc.PeerConnection
	sig  Signaler
	room *room // set by Join before start

	wake      chan struct{} // capacity 1: run reconciles state and subscriptions
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	out       outbox

	// negMu serialises every change of the PeerConnection's signaling state
	// and transceivers: one offer in flight at a time.
	negMu sync.Mutex
	// Guarded by negMu.
	ready      bool                            // the browser's first offer is answered: the server may offer
	offering   bool                            // an offer of ours awaits its answer
	needOffer  bool                            // transceivers changed since the last offer
	closed     bool                            // Close has begun
	downs      map[*pubTrack]*downTrack        // what this participant receives
	ours       map[*webrtc.RTPTransceiver]bool // created by the server to forward
	retiring   []*webrtc.RTPTransceiver        // made inactive since the last offer
	offered    []*webrtc.RTPTransceiver        // made inactive by the offer in flight
	free       []*webrtc.RTPTransceiver        // inactive in the browser too: reusable
	earlyCands []webrtc.ICECandidateInit       // arrived before the first offer
	badAnswers int                             // answers in a row that pion failed on

	candMu sync.Mutex
	// Guarded by candMu.
	descSent  bool                      // a description went out: candidates may follow
	heldCands []webrtc.ICECandidateInit // gathered before that

	lastState  webrtc.PeerConnectionState // Owned by run.
	lastSilent bool                       // Owned by run.
	hidden     bool                       // Guarded by sfu.mu.

	// heard is when the latest RTP packet from the browser arrived (unix
	// ns, 0 before the first); silent is set by SFU.watchLoop when that is
	// more than silenceTimeout ago.
	heard  atomic.Int64
	silent atomic.Bool

	// The browser's latest downlink estimate (REMB) and when it came (unix
	// ns); the number of video tracks it receives, which share it.
	rembBps    atomic.Uint64
	rembAt     atomic.Int64
	videoDowns atomic.Int32

	// direct is set while the selected ICE candidate pair is UDP: writes to
	// this participant go out on a shared socket and never wait for it
	// alone, so forwarded packets are written without a queue (see
	// downTrack).
	direct atomic.Bool
}

func newParticipant(s *SFU, id string, sig Signaler) (*Participant, error) {
	api, err := s.newAPI()
	if err != nil {
		return nil, err
	}
	// No ICE servers: the server is reachable at its own addresses and
	// needs no STUN or TURN; browsers use TURN to reach it if they must.
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	p := &Participant{
		sfu:   s,
		id:    id,
		log:   s.log.With("participant", id),
		api:   api,
		pc:    pc,
		sig:   sig,
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),
		out:   outbox{wake: make(chan struct{}, 1)},
		downs: map[*pubTrack]*downTrack{},
		ours:  map[*webrtc.RTPTransceiver]bool{},
	}
	pc.OnICECandidate(p.onCandidate)
	pc.OnTrack(p.onTrack)
	pc.OnConnectionStateChange(func(webrtc.PeerConnectionState) { p.poke() })
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(pair *webrtc.ICECandidatePair) {
		p.direct.Store(pair.Local.Protocol == webrtc.ICEProtocolUDP)
	})
	return p, nil
}

// start runs the participant's two goroutines; Join has counted them in
// the SFU's WaitGroup.
func (p *Participant) start() {
	go func() {
		defer p.sfu.wg.Done()
		p.run()
	}()
	go func() {
		defer p.sfu.wg.Done()
		p.out.run(p.done)
	}()
}

// HandleOffer applies an offer from the browser and sends the answer. An
// offer that arrives while the server's own offer awaits its answer is
// ignored (glare: the server is the impolite peer; the browser rolls back
// and answers the server's offer, then offers again). A malformed offer is
// an error and changes nothing.
func (p *Participant) HandleOffer(sdpText string) error {
	parsed, err := parseSDP(webrtc.SDPTypeOffer, sdpText)
	if err != nil {
		return fmt.Errorf("sfu: offer: %w", err)
	}
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.gone() {
		return ErrClosed
	}
	if p.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
		p.log.Debug("sfu: glare, ignoring the browser's offer")
		return nil
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdpText}); err != nil {
		if p.closedBy(err) {
			return ErrClosed
		}
		p.recoverRemoteLocked()
		p.maybeOfferLocked()
		return fmt.Errorf("sfu: offer: %w", err)
	}
	p.preferCodecsLocked(parsed)
	for _, c := range p.earlyCands {
		if err := p.pc.AddICECandidate(c); err != nil {
			p.log.Debug("sfu: early candidate rejected", "err", err)
		}
	}
	p.earlyCands = nil
	answer, err := p.pc.CreateAnswer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(answer)
	}
	if err != nil {
		if p.closedBy(err) {
			return ErrClosed
		}
		p.recoverRemoteLocked()
		p.maybeOfferLocked()
		return fmt.Errorf("sfu: answer: %w", err)
	}
	p.sendDescription(answer)
	if !p.ready {
		p.ready = true
		p.poke() // now the tracks already in the room can be offered
	}
	p.maybeOfferLocked()
	return nil
}

// HandleAnswer applies the browser's answer to the server's offer. A
// malformed answer is an error and changes nothing: the offer stays pending.
func (p *Participant) HandleAnswer(sdpText string) error {
	parsed, err := parseSDP(webrtc.SDPTypeAnswer, sdpText)
	if err != nil {
		return fmt.Errorf("sfu: answer: %w", err)
	}
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.gone() {
		return ErrClosed
	}
	if p.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
		return errors.New("sfu: answer: no offer is pending")
	}
	if err := matchesOffer(parsed, p.pc.PendingLocalDescription()); err != nil {
		return fmt.Errorf("sfu: answer: %w", err)
	}
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdpText}); err != nil {
		if p.closedBy(err) {
			return ErrClosed // closed meanwhile (the SFU shutting down)
		}
		if p.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
			return fmt.Errorf("sfu: answer: %w", err) // rejected before use: still pending
		}
		// pion had half applied it. Start over with a fresh offer, but not
		// forever: a browser that fails the same way each time would keep
		// both sides renegotiating.
		p.offering = false
		p.retiring = append(p.offered, p.retiring...)
		p.offered = nil
		if p.badAnswers++; p.badAnswers < maxBadAnswers {
			p.needOffer = true
			p.maybeOfferLocked()
		}
		return fmt.Errorf("sfu: answer: %w", err)
	}
	p.badAnswers = 0
	p.offering = false
	p.free = append(p.free, p.offered...)
	p.offered = nil
	p.maybeOfferLocked()
	return nil
}

// HandleCandidate adds an ICE candidate from the browser. An empty candidate
// (end of candidates) and mDNS (.local) candidates, which a server cannot
// resolve, are ignored; a malformed one is an error.
func (p *Participant) HandleCandidate(c webrtc.ICECandidateInit) error {
	value := strings.TrimPrefix(c.Candidate, "candidate:")
	if value == "" {
		return nil
	}
	cand, err := ice.UnmarshalCandidate(value)
	if err != nil {
		return fmt.Errorf("sfu: candidate: %w", err)
	}
	if strings.HasSuffix(cand.Address(), ".local") {
		return nil
	}
	// RTP and RTCP share one transport (rtcp-mux is required), yet Firefox
	// also signals RTCP (component 2) candidates. pion's ICE ignores the
	// component and could pick such a pair, sending media to a socket the
	// browser reads as RTCP.
	if cand.Component() != 1 {
		return nil
	}
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.gone() {
		return ErrClosed
	}
	if p.pc.RemoteDescription() == nil {
		if len(p.earlyCands) >= maxEarlyCandidates {
			return errors.New("sfu: candidate: too many before the offer")
		}
		p.earlyCands = append(p.earlyCands, c)
		return nil
	}
	if err := p.pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("sfu: candidate: %w", err)
	}
	return nil
}

// gone reports whether the participant or its PeerConnection is closed (the
// SFU closes PeerConnections directly when it shuts down). p.negMu is held.
func (p *Participant) gone() bool {
	return p.closed || p.pc.ConnectionState() == webrtc.PeerConnectionStateClosed
}

// closedBy reports whether err from pion means the PeerConnection was
// closed meanwhile: pion reports that before its state says so.
func (p *Participant) closedBy(err error) bool {
	return p.gone() || errors.Is(err, webrtc.ErrConnectionClosed)
}

// Close removes the participant from its room, which takes its tracks away
// from every other participant at once, and closes its PeerConnection. It
// is safe to call more than once.
func (p *Participant) Close() {
	p.closeOnce.Do(func() {
		p.sfu.leave(p)
		p.negMu.Lock()
		p.closed = true
		downs := p.downs
		p.downs = nil
		p.negMu.Unlock()
		for _, d := range downs {
			d.pub.detach(d)
			d.close()
		}
		close(p.done)
		p.closePC()
		p.log.Info("sfu: left", "room", p.room.id)
	})
}

// Done is closed when the participant is gone: after Close, SFU.Close, or
// when its PeerConnection closed (the browser closed it). Signaling may then
// tell the browser, which has to join again to get media.
func (p *Participant) Done() <-chan struct{} { return p.done }

func (p *Participant) closePC() {
	if err := p.pc.Close(); err != nil {
		p.log.Debug("sfu: close peer connection", "err", err)
	}
}

// connected reports whether media can flow to the browser now.
func (p *Participant) connected() bool {
	return p.pc.ConnectionState() == webrtc.PeerConnectionStateConnected
}

// poke asks run to look at the connection state and the subscriptions again.
func (p *Participant) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// run owns the reaction to connection state changes and keeps the
// forwarded tracks in line with the room. pion reports state changes on a
// new goroutine each, possibly out of order; run reads the current state
// instead, so the last change always wins.
func (p *Participant) run() {
	for {
		select {
		case <-p.done:
			return
		case <-p.wake:
		}
		if !p.applyState() {
			return
		}
		p.reconcile()
	}
}

// applyState hides the participant's tracks from the others while its
// media is interrupted (silent, or ICE disconnected), and reports false once
// the connection is closed for good.
func (p *Participant) applyState() bool {
	st, silent := p.pc.ConnectionState(), p.silent.Load()
	if st == p.lastState && silent == p.lastSilent {
		return true
	}
	changed := st != p.lastState
	p.lastState, p.lastSilent = st, silent
	if changed {
		p.log.Debug("sfu: connection state", "state", st)
	}
	if st == webrtc.PeerConnectionStateClosed {
		p.Close()
		return false
	}
	p.sfu.setHidden(p, silent || st == webrtc.PeerConnectionStateDisconnected || st == webrtc.PeerConnectionStateFailed)
	if changed && st == webrtc.PeerConnectionStateConnected {
		// Tracks bound while the connection was coming up did not ask for
		// a keyframe (it would have been lost): they ask now. Those not yet
		// bound ask when they are.
		p.negMu.Lock()
		var bound []*downTrack
		for _, d := range p.downs {
			if d.bound.Load() {
				bound = append(bound, d)
			}
		}
		p.negMu.Unlock()
		for _, d := range bound {
			d.pub.requestKeyframe(pliIntervalNew)
		}
	}
	return true
}

// reconcile makes the forwarded tracks those the room says this participant
// should receive, and offers the change.
func (p *Participant) reconcile() {
	want := p.sfu.wanted(p)
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.closed || !p.ready {
		return
	}
	wanted := make(map[*pubTrack]bool, len(want))
	for _, t := range want {
		wanted[t] = true
	}
	changed := false
	for t, d := range p.downs {
		if !wanted[t] {
			p.removeDownLocked(d)
			changed = true
		}
	}
	for _, t := range want {
		if p.downs[t] == nil && p.addDownLocked(t) {
			changed = true
		}
	}
	if changed {
		p.needOffer = true
		p.maybeOfferLocked()
	}
}

// preferCodecsLocked orders the codecs of the browser's own m-lines in offer
// as the codecs table does, before they are answered. A browser sends with
// the first codec of the answer, so publishers send VP8 (which every browser
// decodes) unless they lack it; VP9 and H.264 stay negotiated. Since
// packets are forwarded as they are, a publisher's H.264 would reach a
// browser without H.264 as a track it cannot show.
func (p *Participant) preferCodecsLocked(offer *sdp.SessionDescription) {
	byMid := map[string]*webrtc.RTPTransceiver{}
	for _, tr := range p.pc.GetTransceivers() {
		if !p.ours[tr] {
			byMid[tr.Mid()] = tr
		}
	}
	for _, m := range offer.MediaDescriptions {
		mid, _ := m.Attribute(sdp.AttrKeyMID)
		tr := byMid[mid]
		if tr == nil || (m.MediaName.Media != "audio" && m.MediaName.Media != "video") {
			continue
		}
		feedback := audioFeedback
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			feedback = videoFeedback
		}
		one := &sdp.SessionDescription{MediaDescriptions: []*sdp.MediaDescription{m}}
		var offered []webrtc.RTPCodecParameters
		for _, f := range m.MediaName.Formats {
			pt, err := strconv.ParseUint(f, 10, 8)
			if err != nil {
				continue
			}
			c, err := one.GetCodecForPayloadType(uint8(pt))
			if err != nil {
				continue
			}
			channels, _ := strconv.ParseUint(c.EncodingParameters, 10, 16)
			offered = append(offered, webrtc.RTPCodecParameters{
				PayloadType: webrtc.PayloadType(pt),
				RTPCodecCapability: webrtc.RTPCodecCapability{
					MimeType: m.MediaName.Media + "/" + c.Name, ClockRate: c.ClockRate, Channels: uint16(channels),
					SDPFmtpLine: c.Fmtp, RTCPFeedback: feedback,
				},
			})
		}
		slices.SortStableFunc(offered, func(a, b webrtc.RTPCodecParameters) int {
			return codecRank(a.MimeType) - codecRank(b.MimeType)
		})
		// pion refuses the whole list if one codec is not supported (RTX,
		// RED...), so the list grows one accepted codec at a time.
		var prefs []webrtc.RTPCodecParameters
		for _, c := range offered {
			if try := append(prefs, c); tr.SetCodecPreferences(try) == nil {
				prefs = try
			}
		}
	}
}

// codecRank is the place of a codec format in the codecs table.
func codecRank(mime string) int {
	for i, c := range codecs {
		if strings.EqualFold(c.MimeType, mime) {
			return i
		}
	}
	return len(codecs)
}

// addDownLocked starts forwarding t to p, on an inactive m-line of the same
// kind when there is one (so that the SDP does not grow as people come and
// go), else on a new sendonly transceiver. Never on the browser's own
// m-lines: those carry what it publishes.
func (p *Participant) addDownLocked(t *pubTrack) bool {
	d := newDownTrack(t, p)
	if !t.attach(d) {
		return false // the track ended meanwhile
	}
	tr, err := p.reuseLocked(d)
	if tr == nil && err == nil {
		tr, err = p.pc.AddTransceiverFromTrack(d, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	}
	if err == nil {
		// Offer only the publisher's codec: it is forwarded as is. A browser
		// without it rejects the m-line and simply does not get the track.
		err = tr.SetCodecPreferences([]webrtc.RTPCodecParameters{{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType:     t.codec.MimeType,
			ClockRate:    t.codec.ClockRate,
			Channels:     t.codec.Channels,
			SDPFmtpLine:  t.codec.SDPFmtpLine,
			RTCPFeedback: downFeedback(t.kind),
		}}})
		if err != nil && tr.Sender() != nil {
			_ = p.pc.RemoveTrack(tr.Sender())
			p.ours[tr] = true
			p.retiring = append(p.retiring, tr)
		}
	}
	if err != nil {
		t.detach(d)
		p.log.Warn("sfu: cannot forward track", "from", t.owner.id, "track", t.id, "err", err)
		return false
	}
	d.transceiver, d.sender = tr, tr.Sender()
	p.downs[t] = d
	p.ours[tr] = true
	if !p.sfu.spawn(d.rtcpLoop) {
		return false
	}
	return true
}

// reuseLocked puts d on a free inactive transceiver of its kind, if any.
func (p *Participant) reuseLocked(d *downTrack) (*webrtc.RTPTransceiver, error) {
	for i, tr := range p.free {
		if tr.Kind() != d.Kind() || tr.Sender() != nil || tr.Direction() != webrtc.RTPTransceiverDirectionInactive {
			continue
		}
		p.free = append(p.free[:i], p.free[i+1:]...)
		sender, err := p.api.NewRTPSender(d, p.pc.SCTP().Transport())
		if err != nil {
			return nil, err
		}
		if err := tr.SetSender(sender, d); err != nil {
			_ = sender.Stop()
			return nil, err
		}
		return tr, nil
	}
	return nil, nil
}

// removeDownLocked stops forwarding d; its m-line goes inactive in the next
// offer and can be reused once the browser has answered it.
func (p *Participant) removeDownLocked(d *downTrack) {
	delete(p.downs, d.pub)
	d.pub.detach(d)
	if err := p.pc.RemoveTrack(d.sender); err != nil {
		p.log.Debug("sfu: remove track", "err", err)
	}
	d.close()
	p.retiring = append(p.retiring, d.transceiver)
}

// maybeOfferLocked makes an offer if one is needed and allowed now: after
// the browser's first offer, never two in flight, never during the
// browser's own offer. A change during an offer waits for its answer.
func (p *Participant) maybeOfferLocked() {
	if !p.needOffer || !p.ready || p.offering || p.closed || p.pc.SignalingState() != webrtc.SignalingStateStable {
		return
	}
	p.needOffer = false
	offer, err := p.pc.CreateOffer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(offer)
	}
	if err != nil {
		p.log.Warn("sfu: cannot make an offer", "err", err)
		return
	}
	p.offering = true
	p.offered = append(p.offered, p.retiring...)
	p.retiring = nil
	p.sendDescription(offer)
}

// recoverRemoteLocked gets the PeerConnection back to the stable state after
// the browser's offer failed half way (pion has no rollback): it answers the
// offer locally without sending the answer, and offers afresh, which brings
// the browser (which got an error for its offer) back in line.
func (p *Participant) recoverRemoteLocked() {
	if p.pc.SignalingState() != webrtc.SignalingStateHaveRemoteOffer {
		return
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(answer)
	}
	if err != nil {
		// Stuck: pion can neither answer nor forget the offer. Only a
		// broken or hostile client gets here; it has to join again.
		p.log.Warn("sfu: cannot recover from a failed offer, closing", "err", err)
		p.sfu.spawn(p.Close)
		return
	}
	p.needOffer = true
}

// sendDescription queues an offer or answer for the browser, followed by
// any candidates gathered before it (a browser rejects candidates that
// arrive before a description).
func (p *Participant) sendDescription(desc webrtc.SessionDescription) {
	sdpText := desc.SDP
	p.candMu.Lock()
	defer p.candMu.Unlock()
	if desc.Type == webrtc.SDPTypeOffer {
		p.out.push(func() { p.sig.SendOffer(sdpText) })
	} else {
		p.out.push(func() { p.sig.SendAnswer(sdpText) })
	}
	if !p.descSent {
		p.descSent = true
		for _, c := range p.heldCands {
			p.out.push(func() { p.sig.SendCandidate(c) })
		}
		p.heldCands = nil
	}
}

// onCandidate trickles the server's candidates. The end of gathering is not
// signalled: the browser does not need it.
func (p *Participant) onCandidate(c *webrtc.ICECandidate) {
	if c == nil {
		return
	}
	init := c.ToJSON()
	p.candMu.Lock()
	defer p.candMu.Unlock()
	if !p.descSent {
		p.heldCands = append(p.heldCands, init)
		return
	}
	p.out.push(func() { p.sig.SendCandidate(init) })
}

// onTrack runs on pion's goroutine for each track the browser publishes,
// forwards it until it ends, then takes it away from the room.
func (p *Participant) onTrack(remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
	if !p.sfu.enter() {
		return
	}
	defer p.sfu.wg.Done()
	t := newPubTrack(p, remote, recv)
	if !p.sfu.publish(t) {
		return
	}
	p.log.Info("sfu: publishing", "room", p.room.id, "track", t.id, "codec", t.codec.MimeType)
	t.requestKeyframe(pliInterval)
	p.sfu.spawn(t.rtcpLoop)
	t.readLoop()
	p.sfu.unpublish(t)
	t.close()
	p.log.Info("sfu: track ended", "room", p.room.id, "track", t.id)
}

// setREMB records the downlink estimate the browser reported.
func (p *Participant) setREMB(bps float32) {
	p.rembBps.Store(uint64(bps))
	p.rembAt.Store(time.Now().UnixNano())
}

// rembMaxAge is how long a subscriber's estimate counts: browsers send REMB
// about once a second.
const rembMaxAge = 5 * time.Second

// rembShare is this participant's downlink estimate divided among the video
// tracks it receives, and whether there is a recent estimate at all.
func (p *Participant) rembShare(now time.Time) (float64, bool) {
	at := p.rembAt.Load()
	if at == 0 || now.Sub(time.Unix(0, at)) > rembMaxAge {
		return 0, false
	}
	n := max(p.videoDowns.Load(), 1)
	return float64(p.rembBps.Load()) / float64(n), true
}

// parseSDP checks what pion would otherwise find out only after changing
// the signaling state, which pion cannot roll back (it has no rollback).
func parseSDP(typ webrtc.SDPType, text string) (*sdp.SessionDescription, error) {
	if strings.TrimSpace(text) == "" {
		return nil, errors.New("empty SDP")
	}
	parsed, err := (&webrtc.SessionDescription{Type: typ, SDP: text}).Unmarshal()
	if err != nil {
		return nil, fmt.Errorf("malformed SDP: %w", err)
	}
	if len(parsed.MediaDescriptions) == 0 {
		return nil, errors.New("SDP without media")
	}
	session := func(key string) string {
		v, _ := parsed.Attribute(key)
		return v
	}
	fingerprint := session("fingerprint")
	mids := map[string]bool{}
	for i, m := range parsed.MediaDescriptions {
		mid, _ := m.Attribute(sdp.AttrKeyMID)
		if mid == "" {
			return nil, fmt.Errorf("m-line %d has no mid", i)
		}
		if mids[mid] {
			return nil, fmt.Errorf("m-line %d repeats mid %q", i, mid)
		}
		mids[mid] = true
		if n := sendingSSRCs(m); n > 1 {
			return nil, fmt.Errorf("m-line %d sends %d streams (Plan B?); one per m-line", i, n)
		}
		for _, a := range m.Attributes {
			if err := checkAttribute(a); err != nil {
				return nil, fmt.Errorf("m-line %d: %w", i, err)
			}
		}
		if kind := m.MediaName.Media; kind == "audio" || kind == "video" {
			codecs := (&sdp.SessionDescription{MediaDescriptions: []*sdp.MediaDescription{m}}).GetCodecMap()
			for _, f := range m.MediaName.Formats {
				pt, err := strconv.ParseUint(f, 10, 8)
				if err != nil {
					return nil, fmt.Errorf("m-line %d: payload type %q", i, f)
				}
				if _, ok := codecs[uint8(pt)]; !ok && pt != 0 {
					return nil, fmt.Errorf("m-line %d: payload type %d has no rtpmap", i, pt)
				}
			}
		}
		if m.MediaName.Port.Value == 0 {
			continue // rejected
		}
		for _, key := range []string{"ice-ufrag", "ice-pwd"} {
			if v, _ := m.Attribute(key); v == "" && session(key) == "" {
				return nil, fmt.Errorf("m-line %d has no %s", i, key)
			}
		}
		if fingerprint == "" {
			fingerprint, _ = m.Attribute("fingerprint")
		}
	}
	if len(strings.Fields(fingerprint)) != 2 {
		return nil, errors.New("no valid DTLS fingerprint")
	}
	return parsed, nil
}

// sendingSSRCs counts the media streams an m-line declares: its SSRCs but
// those that only repair another (RTX, FEC). More than one (without
// simulcast) is Plan B, which pion accepts and then cannot answer.
func sendingSSRCs(m *sdp.MediaDescription) int {
	ssrcs := map[string]bool{}
	repair := map[string]bool{}
	for _, a := range m.Attributes {
		switch a.Key {
		case "ssrc":
			ssrc, _, _ := strings.Cut(a.Value, " ")
			ssrcs[ssrc] = true
		case "ssrc-group":
			fields := strings.Fields(a.Value)
			if len(fields) > 0 && fields[0] == "SIM" {
				return 1 // simulcast: one stream in several encodings
			}
			if len(fields) > 2 {
				for _, f := range fields[2:] {
					repair[f] = true
				}
			}
		}
	}
	n := 0
	for ssrc := range ssrcs {
		if !repair[ssrc] {
			n++
		}
	}
	return n
}

// checkAttribute parses the media attributes pion parses after changing
// the signaling state.
func checkAttribute(a sdp.Attribute) error {
	switch a.Key {
	case "candidate":
		_, err := ice.UnmarshalCandidate(a.Value)
		if err != nil && !errors.Is(err, ice.ErrUnknownCandidateTyp) && !errors.Is(err, ice.ErrDetermineNetworkType) {
			return fmt.Errorf("candidate %q: %w", a.Value, err)
		}
	case "extmap":
		if err := (&sdp.ExtMap{}).Unmarshal("extmap:" + a.Value); err != nil {
			return err
		}
	case "rtpmap":
		pt, codec, ok := strings.Cut(a.Value, " ")
		if _, err := strconv.ParseUint(pt, 10, 8); err != nil || !ok || !strings.Contains(codec, "/") {
			return fmt.Errorf("rtpmap %q", a.Value)
		}
	}
	return nil
}

// matchesOffer checks that an answer has the m-lines of the offer.
func matchesOffer(answer *sdp.SessionDescription, offer *webrtc.SessionDescription) error {
	if offer == nil {
		return errors.New("no offer is pending")
	}
	parsed, err := offer.Unmarshal()
	if err != nil {
		return err
	}
	if len(answer.MediaDescriptions) != len(parsed.MediaDescriptions) {
		return fmt.Errorf("%d m-lines for the offer's %d", len(answer.MediaDescriptions), len(parsed.MediaDescriptions))
	}
	for i, m := range parsed.MediaDescriptions {
		want, _ := m.Attribute(sdp.AttrKeyMID)
		got, _ := answer.MediaDescriptions[i].Attribute(sdp.AttrKeyMID)
		if got != want {
			return fmt.Errorf("m-line %d has mid %q, the offer's has %q", i, got, want)
		}
	}
	return nil
}

// outbox delivers a participant's messages to its Signaler in order, on one
// goroutine. Unbounded, but it holds only descriptions and candidates, a
// handful per negotiation.
type outbox struct {
	wake  chan struct{} // capacity 1
	mu    sync.Mutex
	queue []func() // Guarded by mu.
}

func (o *outbox) push(f func()) {
	o.mu.Lock()
	o.queue = append(o.queue, f)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

func (o *outbox) run(done <-chan struct{}) {
	for {
		select {
		case <-done:
			return
		case <-o.wake:
		}
		for {
			o.mu.Lock()
			q := o.queue
			o.queue = nil
			o.mu.Unlock()
			if len(q) == 0 {
				break
			}
			for _, f := range q {
				select {
				case <-done:
					return
				default:
				}
				f()
			}
		}
	}
}
