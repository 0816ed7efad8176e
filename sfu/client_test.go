package sfu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-chat/parley/config"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// testLogger sends log lines to t.Logf until the test ends. Level info, or
// debug with PARLEY_SFU_DEBUG=1.
func testLogger(t testing.TB) *slog.Logger {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	level := slog.LevelInfo
	if os.Getenv("PARLEY_SFU_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testLogWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLogWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", bytes.TrimRight(b, "\n"))
	}
	return len(b), nil
}

// newTestSFU starts an SFU on 127.0.0.1 with ports picked by the kernel.
func newTestSFU(t testing.TB, opts Options) *SFU {
	t.Helper()
	log := testLogger(t)
	l, err := Listen(config.SFU{}, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(l, opts, log)
	if err != nil {
		_ = l.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

// clientOpts say what a test client publishes and how it connects.
type clientOpts struct {
	audio, video bool // publish generated Opus and VP8
	tcp          bool // ICE-TCP only
}

// client is a pion PeerConnection playing a browser in SFU mode: it offers
// first with an audio and a video transceiver, answers the server's offers
// (politely, as perfect negotiation's polite peer), and records what it
// receives. Its Signaler side is wired straight to the SFU's Participant:
// messages go through an ordered queue, as over a WebSocket.
type client struct {
	t    *testing.T
	id   string
	pc   *webrtc.PeerConnection
	part *Participant
	conn *lossyConn // nil for ICE-TCP clients
	mux  ice.UDPMux

	actions  chan func() // the "WebSocket": run in order by loop
	stop     chan struct{}
	loopDone chan struct{}
	pumpDone chan struct{}

	audioTrack, videoTrack *webrtc.TrackLocalStaticRTP
	videoSender            *webrtc.RTPSender

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change; guarded by mu
	// Guarded by mu.
	tracks     []*recvTrack
	plis       int
	rembs      []float32
	twccs      int // packets the server's TWCC feedback reported on
	holdOffers bool
	held       []string
	answers    int // answers received from the server
}

// recvTrack is a track the client receives. Guarded by client.mu.
type recvTrack struct {
	stream, id string
	kind       webrtc.RTPCodecType
	ssrc       uint32
	packets    int
	seqs       map[uint16]int
	ended      bool
	endedAt    time.Time
}

func newClient(t *testing.T, id string, opts clientOpts) *client {
	t.Helper()
	c := &client{
		t:        t,
		id:       id,
		actions:  make(chan func(), 256),
		stop:     make(chan struct{}),
		loopDone: make(chan struct{}),
		pumpDone: make(chan struct{}),
		changed:  make(chan struct{}),
	}

	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, reg); err != nil {
		t.Fatal(err)
	}
	// Stamp transport-wide sequence numbers, as browsers do, so that the
	// server sends TWCC feedback.
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(me, reg); err != nil {
		t.Fatal(err)
	}

	// Loopback only: this machine has other addresses that tests must never
	// send to.
	logs := &logTarget{}
	logs.log.Store(testLogger(t).With("client", id))
	se := webrtc.SettingEngine{LoggerFactory: loggerFactory{target: logs}}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	if opts.tcp {
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4})
	} else {
		udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		c.conn = &lossyConn{PacketConn: udp, dropped: make(chan uint16, 1)}
		c.mux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: c.conn})
		se.SetICEUDPMux(c.mux)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	}

	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	c.pc = pc

	sendrecv := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}
	if opts.audio {
		c.audioTrack, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", id+"-local")
		if err != nil {
			t.Fatal(err)
		}
		tr, err := pc.AddTransceiverFromTrack(c.audioTrack, sendrecv)
		if err != nil {
			t.Fatal(err)
		}
		go c.readRTCP(tr.Sender())
	} else if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, sendrecv); err != nil {
		t.Fatal(err)
	}
	if opts.video {
		c.videoTrack, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "cam", id+"-local")
		if err != nil {
			t.Fatal(err)
		}
		tr, err := pc.AddTransceiverFromTrack(c.videoTrack, sendrecv)
		if err != nil {
			t.Fatal(err)
		}
		c.videoSender = tr.Sender()
		go c.readRTCP(tr.Sender())
	} else if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, sendrecv); err != nil {
		t.Fatal(err)
	}

	pc.OnTrack(c.onTrack)
	pc.OnICECandidate(func(ic *webrtc.ICECandidate) {
		if ic == nil {
			return
		}
		init := ic.ToJSON()
		c.post(func() {
			if err := c.part.HandleCandidate(init); err != nil {
				c.fail("candidate: %v", err)
			}
		})
	})

	go c.loop()
	go c.pump()
	t.Cleanup(c.close)
	return c
}

// join enters the room and makes the first offer.
func (c *client) join(s *SFU, room string) {
	c.t.Helper()
	p, err := s.Join(room, c.id, c)
	if err != nil {
		c.t.Fatal(err)
	}
	c.part = p
	c.post(c.offer)
}

func (c *client) close() {
	close(c.stop)
	<-c.loopDone
	<-c.pumpDone
	_ = c.pc.Close()
	if c.mux != nil {
		_ = c.mux.Close()
	}
}

// SendOffer, SendAnswer and SendCandidate implement Signaler.
func (c *client) SendOffer(sdp string) { c.post(func() { c.onServerOffer(sdp) }) }
func (c *client) SendAnswer(sdp string) {
	c.post(func() {
		if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
			c.fail("set answer: %v", err)
		}
		c.update(func() { c.answers++ })
	})
}
func (c *client) SendCandidate(ci webrtc.ICECandidateInit) {
	c.post(func() {
		if err := c.pc.AddICECandidate(ci); err != nil {
			c.fail("add candidate: %v", err)
		}
	})
}

// fail reports an error of the client's signaling, unless the connection
// is closing anyway (the end of a test).
func (c *client) fail(format string, args ...any) {
	for _, a := range args {
		// The server's side or this client's own closed meanwhile (pion
		// says so before its state does).
		if err, ok := a.(error); ok && (errors.Is(err, ErrClosed) || errors.Is(err, webrtc.ErrConnectionClosed)) {
			return
		}
	}
	if c.pc.ConnectionState() == webrtc.PeerConnectionStateClosed {
		return
	}
	c.t.Errorf("%s: "+format, append([]any{c.id}, args...)...)
}

func (c *client) post(f func()) {
	select {
	case c.actions <- f:
	case <-c.stop:
	}
}

func (c *client) loop() {
	defer close(c.loopDone)
	for {
		select {
		case f := <-c.actions:
			f()
		case <-c.stop:
			return
		}
	}
}

// offer makes an offer to the server (on the loop).
func (c *client) offer() {
	offer, err := c.pc.CreateOffer(nil)
	if err == nil {
		err = c.pc.SetLocalDescription(offer)
	}
	if err != nil {
		c.fail("offer: %v", err)
		return
	}
	if err := c.part.HandleOffer(offer.SDP); err != nil {
		c.fail("server rejected offer: %v", err)
	}
}

// onServerOffer answers the server's offer. (A browser, the polite peer,
// would first roll back an offer of its own that crossed this one; pion has
// no rollback, so the tests make crossing offers without applying them.)
func (c *client) onServerOffer(sdp string) {
	held := false
	c.update(func() {
		if held = c.holdOffers; held {
			c.held = append(c.held, sdp)
		}
	})
	if held {
		return
	}
	if os.Getenv("PARLEY_SFU_DEBUG") != "" {
		c.t.Logf("%s: server offer:\n%s", c.id, sdp)
	}
	// pion (v4.2.26) stops a transceiver every time an offer says inactive,
	// even after it has given it a fresh receiver; when the server later
	// reuses that m-line for another track, OnTrack never fires. Browsers
	// do not do this. recvonly has the same effect on a receive-only
	// transceiver (the track ends, the answer says inactive) without it.
	sdp = strings.ReplaceAll(sdp, "a=inactive\r\n", "a=recvonly\r\n")
	if err := c.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp}); err != nil {
		c.fail("set offer: %v", err)
		return
	}
	answer, err := c.pc.CreateAnswer(nil)
	if err == nil {
		err = c.pc.SetLocalDescription(answer)
	}
	if err != nil {
		c.fail("answer: %v", err)
		return
	}
	if err := c.part.HandleAnswer(answer.SDP); err != nil {
		c.fail("server rejected answer: %v", err)
	}
}

// releaseOffers stops holding the server's offers and handles those held.
func (c *client) releaseOffers() {
	c.mu.Lock()
	held := c.held
	c.held, c.holdOffers = nil, false
	c.mu.Unlock()
	for _, sdp := range held {
		c.post(func() { c.onServerOffer(sdp) })
	}
}

func (c *client) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	rt := &recvTrack{stream: tr.StreamID(), id: tr.ID(), kind: tr.Kind(), ssrc: uint32(tr.SSRC()), seqs: map[uint16]int{}}
	c.update(func() { c.tracks = append(c.tracks, rt) })
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			c.update(func() { rt.ended, rt.endedAt = true, time.Now() })
			return
		}
		c.update(func() {
			rt.packets++
			rt.seqs[pkt.SequenceNumber]++
		})
	}
}

// readRTCP drives a sender's interceptors (the NACK responder) and records
// the keyframe requests and bitrate limits the server sends.
func (c *client) readRTCP(s *webrtc.RTPSender) {
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			if isClosed(err) {
				return
			}
			continue
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication:
				c.update(func() { c.plis++ })
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				c.update(func() { c.rembs = append(c.rembs, p.Bitrate) })
			case *rtcp.TransportLayerCC:
				c.update(func() { c.twccs += int(p.PacketStatusCount) })
			}
		}
	}
}

// pump publishes generated media: a 300-byte VP8 packet every 10 ms and an
// 80-byte Opus packet every 20 ms.
func (c *client) pump() {
	defer close(c.pumpDone)
	if c.audioTrack == nil && c.videoTrack == nil {
		return
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	var vseq, aseq uint16
	var vts, ats uint32
	for i := 0; ; i++ {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		if c.videoTrack != nil {
			payload := make([]byte, 300)
			payload[0] = 0x10 // VP8 descriptor: start of partition
			binary.BigEndian.PutUint16(payload[4:], vseq)
			_ = c.videoTrack.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, SequenceNumber: vseq, Timestamp: vts, Marker: i%3 == 2},
				Payload: payload,
			})
			vseq++
			if i%3 == 2 {
				vts += 3000
			}
		}
		if c.audioTrack != nil && i%2 == 0 {
			_ = c.audioTrack.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, SequenceNumber: aseq, Timestamp: ats},
				Payload: make([]byte, 80),
			})
			aseq++
			ats += 960
		}
	}
}

// update changes the client's state under its lock and wakes waiters.
func (c *client) update(f func()) {
	c.mu.Lock()
	f()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// waitFor waits until cond (called with c.mu held) is true.
func (c *client) waitFor(what string, timeout time.Duration, cond func() bool) {
	c.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok, ch := cond(), c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			c.t.Fatalf("%s: no %s within %v", c.id, what, timeout)
		}
	}
}

// live returns the live track of kind from stream that has received at
// least n packets, if any. Call with c.mu held.
func (c *client) live(stream string, kind webrtc.RTPCodecType, n int) *recvTrack {
	for _, rt := range c.tracks {
		if rt.stream == stream && rt.kind == kind && !rt.ended && rt.packets >= n {
			return rt
		}
	}
	return nil
}

// waitMedia waits until audio and video from stream are flowing.
func (c *client) waitMedia(stream string, timeout time.Duration) (audio, video *recvTrack) {
	c.t.Helper()
	c.waitFor("media from "+stream, timeout, func() bool {
		audio, video = c.live(stream, webrtc.RTPCodecTypeAudio, 10), c.live(stream, webrtc.RTPCodecTypeVideo, 10)
		return audio != nil && video != nil
	})
	return audio, video
}

// waitGone waits until no live track from stream is left.
func (c *client) waitGone(stream string, timeout time.Duration) {
	c.t.Helper()
	c.waitFor("end of tracks from "+stream, timeout, func() bool {
		return c.live(stream, webrtc.RTPCodecTypeAudio, 0) == nil && c.live(stream, webrtc.RTPCodecTypeVideo, 0) == nil
	})
}

// lossyConn is a client's UDP socket with faults on demand: dead drops all
// it sends (the machine vanished); dropSSRC drops the next RTP packet of
// that SSRC it receives, before SRTP sees it, as if lost on the way.
type lossyConn struct {
	net.PacketConn
	dead     atomic.Bool
	dropSSRC atomic.Uint32
	dropped  chan uint16 // sequence number of the dropped packet
}

func (c *lossyConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.dead.Load() {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

func (c *lossyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(b)
		// RTP: version 2, and not an RTCP packet type (192–223).
		if err == nil && n >= 12 && b[0]>>6 == 2 && (b[1] < 192 || b[1] > 223) {
			ssrc := c.dropSSRC.Load()
			if ssrc != 0 && binary.BigEndian.Uint32(b[8:12]) == ssrc && c.dropSSRC.CompareAndSwap(ssrc, 0) {
				c.dropped <- binary.BigEndian.Uint16(b[2:4])
				continue
			}
		}
		return n, addr, err
	}
}
