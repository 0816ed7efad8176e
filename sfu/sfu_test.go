package sfu

import (
	"errors"
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parley-chat/parley/config"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// removalBudget is how soon a departed publisher's tracks must be gone from
// every subscriber.
const removalBudget = 2 * time.Second

// mediaTimeout is how long connecting and first packets may take.
const mediaTimeout = 10 * time.Second

func TestForwarding(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	a.join(s, "room")
	b.join(s, "room")

	audio, video := b.waitMedia("alice", mediaTimeout)
	if audio.id != "audio" || video.id != "video" {
		t.Errorf("track ids = %q, %q; want audio, video", audio.id, video.id)
	}

	// A late joiner receives the tracks already there, and the stream id
	// tells whose they are.
	c := newClient(t, "carol", clientOpts{audio: true, video: true})
	c.join(s, "room")
	c.waitMedia("alice", mediaTimeout)
	b.waitMedia("carol", mediaTimeout)
	a.waitMedia("carol", mediaTimeout)

	// Nobody receives their own tracks, and bob publishes nothing.
	for _, cl := range []*client{a, b, c} {
		cl.mu.Lock()
		for _, rt := range cl.tracks {
			if rt.stream == cl.id || rt.stream == "bob" {
				t.Errorf("%s receives a track of stream %q", cl.id, rt.stream)
			}
		}
		cl.mu.Unlock()
	}

	st := s.Stats()
	if st.Rooms != 1 || st.Participants["room"] != 3 || st.Tracks != 4 || st.Forwards != 8 {
		t.Errorf("stats = %+v; want 1 room of 3, 4 tracks, 8 forwards", st)
	}
	if st.ForwardedPackets == 0 || st.ForwardedBytes == 0 {
		t.Errorf("nothing counted as forwarded: %+v", st)
	}

	// A second video track (a screen share) is renegotiated by the browser
	// and forwarded as video-<mid>.
	screen, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "screen", "alice-local")
	if err != nil {
		t.Fatal(err)
	}
	var screenSender *webrtc.RTPSender
	done := make(chan struct{})
	a.post(func() {
		defer close(done)
		tr, err := a.pc.AddTransceiverFromTrack(screen, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			t.Error(err)
			return
		}
		screenSender = tr.Sender()
		a.offer()
	})
	<-done
	stopScreen := make(chan struct{})
	defer close(stopScreen)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for seq := uint16(0); ; seq++ {
			select {
			case <-stopScreen:
				return
			case <-tick.C:
			}
			payload := make([]byte, 100)
			payload[0] = 0x10
			_ = screen.WriteRTP(&rtp.Packet{
				Header:  rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, Marker: true},
				Payload: payload,
			})
		}
	}()
	screenLive := func() bool {
		for _, rt := range b.tracks {
			if rt.stream == "alice" && strings.HasPrefix(rt.id, "video-") && !rt.ended && rt.packets > 5 {
				return true
			}
		}
		return false
	}
	b.waitFor("alice's screen share", mediaTimeout, screenLive)

	// Stopping the share takes the track away.
	start := time.Now()
	a.post(func() {
		if err := a.pc.RemoveTrack(screenSender); err != nil {
			t.Error(err)
		}
		a.offer()
	})
	b.waitFor("end of alice's screen share", removalBudget, func() bool { return !screenLive() })
	t.Logf("screen share gone %v after it stopped", time.Since(start))
	b.waitMedia("alice", mediaTimeout)
}

func TestLeaveRemovesTracks(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	c := newClient(t, "carol", clientOpts{audio: true, video: true})
	for _, cl := range []*client{a, b, c} {
		cl.join(s, "room")
	}
	b.waitMedia("alice", mediaTimeout)
	b.waitMedia("carol", mediaTimeout)

	start := time.Now()
	a.part.Close()
	b.waitGone("alice", removalBudget)
	c.waitGone("alice", removalBudget)
	t.Logf("tracks gone %v after leave", time.Since(start))
	b.waitMedia("carol", mediaTimeout) // the others are untouched

	if st := s.Stats(); st.Participants["room"] != 2 || st.Tracks != 2 {
		t.Errorf("stats after leave = %+v", st)
	}
	if err := a.part.HandleOffer("v=0"); err == nil {
		t.Error("a closed participant accepted an offer")
	}

	// The last one out removes the room.
	b.part.Close()
	c.part.Close()
	if st := s.Stats(); st.Rooms != 0 {
		t.Errorf("empty room still there: %+v", st)
	}
}

// A publisher whose machine vanishes without a word loses its tracks at
// every subscriber within the budget, through ICE, and gets them back if it
// comes back.
func TestCrashRemovesTracks(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	a.join(s, "room")
	b.join(s, "room")
	b.waitMedia("alice", mediaTimeout)

	start := time.Now()
	a.conn.dead.Store(true)
	b.waitGone("alice", removalBudget)
	t.Logf("tracks gone %v after the publisher went silent", time.Since(start))

	a.conn.dead.Store(false)
	b.waitMedia("alice", mediaTimeout)
}

func TestNACKRetransmission(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	a.join(s, "room")
	b.join(s, "room")
	_, video := b.waitMedia("alice", mediaTimeout)

	b.mu.Lock()
	ssrc := video.ssrc
	b.mu.Unlock()
	b.conn.dropSSRC.Store(ssrc)
	var seq uint16
	select {
	case seq = <-b.conn.dropped:
	case <-time.After(mediaTimeout):
		t.Fatal("no packet dropped")
	}
	b.waitFor("retransmission of "+strconv.Itoa(int(seq)), 3*time.Second, func() bool { return video.seqs[seq] > 0 })

	st := s.Stats()
	if st.NACKsReceived == 0 || st.Retransmitted == 0 {
		t.Errorf("NACK not counted: %+v", st)
	}
}

func TestKeyframeRequests(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	a.join(s, "room")
	// One request when the track starts.
	a.waitFor("keyframe request at start", mediaTimeout, func() bool { return a.plis >= 1 })
	a.mu.Lock()
	before := a.plis
	a.mu.Unlock()

	b := newClient(t, "bob", clientOpts{})
	b.join(s, "room")
	a.waitFor("keyframe request for the new subscriber", mediaTimeout, func() bool { return a.plis > before })
	b.waitMedia("alice", mediaTimeout)

	// The subscriber's own PLIs reach the publisher, rate-limited.
	a.mu.Lock()
	before = a.plis
	a.mu.Unlock()
	_, video := b.waitMedia("alice", mediaTimeout)
	b.mu.Lock()
	ssrc := video.ssrc
	b.mu.Unlock()
	for range 10 {
		if err := b.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
			t.Fatal(err)
		}
	}
	a.waitFor("forwarded keyframe request", 2*time.Second, func() bool { return a.plis > before })
	if st := s.Stats(); st.KeyframeRequests < 10 || st.PLIsSent >= st.KeyframeRequests {
		t.Errorf("keyframe requests not rate-limited: %+v", st)
	}
}

// The weakest subscriber's downlink estimate becomes the publisher's limit.
func TestREMB(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	c := newClient(t, "carol", clientOpts{})
	for _, cl := range []*client{a, b, c} {
		cl.join(s, "room")
	}
	_, bv := b.waitMedia("alice", mediaTimeout)
	_, cv := c.waitMedia("alice", mediaTimeout)

	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			_ = b.pc.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: 300_000, SSRCs: []uint32{bv.ssrc}}})
			_ = c.pc.WriteRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: 2_000_000, SSRCs: []uint32{cv.ssrc}}})
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	const want = 300_000 + audioAllowance
	a.waitFor("bitrate limit of the weakest subscriber", 5*time.Second, func() bool {
		return len(a.rembs) > 0 && a.rembs[len(a.rembs)-1] == want
	})
	// The publisher's own congestion control gets TWCC feedback too.
	a.waitFor("TWCC feedback on 100 packets", 5*time.Second, func() bool { return a.twccs >= 100 })
}

// Glare: the browser offers while the server's offer is on its way. The
// server, the impolite peer, ignores the browser's offer; the browser rolls
// its offer back, answers the server's, and offers again.
func TestGlare(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	a.join(s, "room")
	b.join(s, "room")
	b.waitMedia("alice", mediaTimeout)

	b.mu.Lock()
	b.holdOffers = true
	answers := b.answers
	b.mu.Unlock()
	c := newClient(t, "carol", clientOpts{audio: true, video: true})
	c.join(s, "room")
	b.waitFor("server offer for carol's tracks", mediaTimeout, func() bool { return len(b.held) > 0 })

	// The crossing offer, made but (as after a rollback) not kept.
	crossing := make(chan error, 1)
	b.post(func() {
		offer, err := b.pc.CreateOffer(nil)
		if err == nil {
			err = b.part.HandleOffer(offer.SDP)
		}
		if err == nil && b.part.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
			err = errors.New("the server gave up its own offer")
		}
		crossing <- err
	})
	if err := <-crossing; err != nil {
		t.Fatal(err)
	}

	b.releaseOffers()
	b.waitMedia("carol", mediaTimeout)
	b.post(b.offer) // offering again
	b.waitFor("answer to the offer made again", mediaTimeout, func() bool {
		return b.answers > answers && b.pc.SignalingState() == webrtc.SignalingStateStable
	})
	b.mu.Lock()
	if b.answers != answers+1 {
		t.Errorf("%d answers from the server; want 1 (the crossing offer must not be answered)", b.answers-answers)
	}
	b.mu.Unlock()
	b.waitMedia("alice", mediaTimeout)
}

func TestBadInputLeavesParticipantWorking(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	a.join(s, "room")
	b.join(s, "room")
	b.waitMedia("alice", mediaTimeout)

	local := b.pc.LocalDescription().SDP
	noMid := strings.ReplaceAll(local, "a=mid:", "a=xmid:")
	noUfrag := strings.ReplaceAll(local, "a=ice-ufrag:", "a=x-ufrag:")
	dupMid := strings.Replace(local, "a=mid:1", "a=mid:0", 1)
	planB := strings.Replace(local, "a=mid:0\r\n", "a=mid:0\r\na=ssrc:1 cname:x\r\na=ssrc:2 cname:y\r\n", 1)
	badFingerprint := regexp.MustCompile(`a=fingerprint:[^\r]*`).ReplaceAllString(local, "a=fingerprint:sha-256")
	bad := []struct {
		name string
		call func() error
	}{
		{"empty offer", func() error { return b.part.HandleOffer("") }},
		{"garbage offer", func() error { return b.part.HandleOffer("hello\r\nworld") }},
		{"offer without mid", func() error { return b.part.HandleOffer(noMid) }},
		{"offer without ice-ufrag", func() error { return b.part.HandleOffer(noUfrag) }},
		{"offer with a mid twice", func() error { return b.part.HandleOffer(dupMid) }},
		{"Plan B offer", func() error { return b.part.HandleOffer(planB) }},
		{"offer with a bad fingerprint", func() error { return b.part.HandleOffer(badFingerprint) }},
		{"garbage answer", func() error { return b.part.HandleAnswer("v=0\r\nbogus") }},
		{"answer without an offer", func() error { return b.part.HandleAnswer(local) }},
		{"garbage candidate", func() error {
			return b.part.HandleCandidate(webrtc.ICECandidateInit{Candidate: "candidate:this is not one"})
		}},
		{"candidate with bad port", func() error {
			return b.part.HandleCandidate(webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 2130706431 127.0.0.1 99999999 typ host"})
		}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); err == nil {
				t.Error("accepted")
			} else {
				t.Logf("error: %v", err)
			}
		})
	}
	// Ignored, not errors.
	for _, ci := range []string{"", "candidate:1 1 udp 2130706431 0f3c1a2b-aaaa-bbbb-cccc-123456789abc.local 5000 typ host"} {
		if err := b.part.HandleCandidate(webrtc.ICECandidateInit{Candidate: ci}); err != nil {
			t.Errorf("candidate %q: %v", ci, err)
		}
	}

	// Still working: media keeps flowing and a newcomer's tracks arrive.
	c := newClient(t, "carol", clientOpts{audio: true, video: true})
	c.join(s, "room")
	b.waitMedia("carol", mediaTimeout)
	b.waitMedia("alice", mediaTimeout)
}

// People coming and going do not make the SDP grow: a departed publisher's
// m-lines are reused for the next one.
func TestMLinesReused(t *testing.T) {
	s := newTestSFU(t, Options{})
	b := newClient(t, "bob", clientOpts{})
	b.join(s, "room")
	for i := range 3 {
		id := "p" + strconv.Itoa(i)
		p := newClient(t, id, clientOpts{audio: true, video: true})
		p.join(s, "room")
		b.waitMedia(id, mediaTimeout)
		p.part.Close()
		b.waitGone(id, removalBudget)
	}
	b.waitFor("stable signaling", mediaTimeout, func() bool { return b.pc.SignalingState() == webrtc.SignalingStateStable })
	if n := len(b.pc.GetTransceivers()); n != 4 {
		t.Errorf("%d transceivers after 3 publishers came and went; want 4 (2 own + 2 reused)", n)
	}
}

// ICE-TCP, with the public IP one of the bound addresses.
func TestICETCP(t *testing.T) {
	s := newTestSFU(t, Options{PublicIP: "127.0.0.1"})
	a := newClient(t, "alice", clientOpts{audio: true, video: true, tcp: true})
	b := newClient(t, "bob", clientOpts{})
	a.join(s, "room")
	b.join(s, "room")
	b.waitMedia("alice", mediaTimeout)
}

func TestListenErrorsNameTheAddress(t *testing.T) {
	udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	udpPort := udp.LocalAddr().(*net.UDPAddr).Port
	tcpPort := tcp.Addr().(*net.TCPAddr).Port

	for _, tc := range []struct {
		cfg  config.SFU
		want string
	}{
		{config.SFU{UDPPort: udpPort}, "127.0.0.1:" + strconv.Itoa(udpPort)},
		{config.SFU{TCPPort: tcpPort}, "127.0.0.1:" + strconv.Itoa(tcpPort)},
	} {
		l, err := Listen(tc.cfg, "127.0.0.1")
		if err == nil {
			_ = l.Close()
			t.Errorf("Listen(%+v) succeeded on a taken port", tc.cfg)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %q does not name %s", err, tc.want)
		}
	}
	if _, err := Listen(config.SFU{}, "not-an-ip"); err == nil {
		t.Error("Listen accepted a bad bind address")
	}
}

// Every local address, port picked by the kernel: one port for all. (Only
// binds; nothing is sent.)
func TestListenOnEveryAddress(t *testing.T) {
	for _, bind := range []string{"", "0.0.0.0"} {
		l, err := Listen(config.SFU{}, bind)
		if err != nil {
			t.Fatalf("Listen(%q): %v", bind, err)
		}
		port := l.UDPAddr().(*net.UDPAddr).Port
		for _, a := range l.udpMux.GetListenAddresses() {
			if a.(*net.UDPAddr).Port != port {
				t.Errorf("Listen(%q): socket %v not on port %d", bind, a, port)
			}
		}
		if port == 0 || l.TCPAddr().(*net.TCPAddr).Port == 0 {
			t.Errorf("Listen(%q): ports %v, %v", bind, l.UDPAddr(), l.TCPAddr())
		}
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	}
}

// After Close nothing of the SFU, its PeerConnections or the clients' is
// left running.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Run("call", func(t *testing.T) {
		s := newTestSFU(t, Options{})
		a := newClient(t, "alice", clientOpts{audio: true, video: true})
		b := newClient(t, "bob", clientOpts{audio: true, video: true})
		a.join(s, "room")
		b.join(s, "room")
		b.waitMedia("alice", mediaTimeout)
		a.waitMedia("bob", mediaTimeout)
		if err := s.Close(); err != nil {
			t.Error(err)
		}
		if _, err := s.Join("room", "carol", b); err == nil {
			t.Error("Join after Close succeeded")
		}
	})
	goleak.VerifyNone(t, opt)
}

// A browser restarts ICE (new credentials in its offer) after a network
// change; the media carries on over the same UDP port.
func TestICERestart(t *testing.T) {
	s := newTestSFU(t, Options{})
	a := newClient(t, "alice", clientOpts{audio: true, video: true})
	b := newClient(t, "bob", clientOpts{})
	a.join(s, "room")
	b.join(s, "room")
	b.waitMedia("alice", mediaTimeout)
	ufrag := func(sdp string) string {
		_, rest, _ := strings.Cut(sdp, "a=ice-ufrag:")
		u, _, _ := strings.Cut(rest, "\r\n")
		return u
	}
	before := ufrag(a.part.pc.RemoteDescription().SDP)

	a.post(func() {
		offer, err := a.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
		if err == nil {
			err = a.pc.SetLocalDescription(offer)
		}
		if err == nil {
			err = a.part.HandleOffer(offer.SDP)
		}
		if err != nil {
			t.Error(err)
		}
	})
	// (Waiting on bob, who is woken by every packet from alice.)
	var video *recvTrack
	var n int
	b.waitFor("alice's ICE restart", mediaTimeout, func() bool {
		if ufrag(a.part.pc.RemoteDescription().SDP) == before || a.pc.ICEConnectionState() != webrtc.ICEConnectionStateConnected {
			return false
		}
		video = b.live("alice", webrtc.RTPCodecTypeVideo, 0)
		n = video.packets
		return true
	})
	b.waitFor("media after the restart", mediaTimeout, func() bool { return video.packets > n+50 })
}
