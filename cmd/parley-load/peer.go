package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// sfuPeer is the participant id of the server in SFU rooms.
const sfuPeer = "sfu"

// message is a signaling message, both ways (docs/protocol.md).
type message struct {
	Type      string                   `json:"type"`
	Room      string                   `json:"room,omitempty"`
	Name      string                   `json:"name,omitempty"`
	ID        string                   `json:"id,omitempty"`
	Mode      string                   `json:"mode,omitempty"`
	To        string                   `json:"to,omitempty"`
	From      string                   `json:"from,omitempty"`
	SDP       string                   `json:"sdp,omitempty"`
	Candidate *webrtc.ICECandidateInit `json:"candidate,omitempty"`
	Code      string                   `json:"code,omitempty"`
	Message   string                   `json:"message,omitempty"`
	Reason    string                   `json:"reason,omitempty"`
}

// newAPI returns the pion API of the tool's PeerConnections: VP8 and Opus
// with the feedback a browser offers, NACK and RTCP reports, transport-cc
// and abs-send-time; ICE on IPv4 loopback only, no mDNS.
func newAPI(log *slog.Logger) (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	videoFB := []webrtc.RTCPFeedback{
		{Type: webrtc.TypeRTCPFBGoogREMB}, {Type: webrtc.TypeRTCPFBTransportCC},
		{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"}, {Type: webrtc.TypeRTCPFBNACK}, {Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"},
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
		RTCPFeedback: []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}},
	}}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFB,
	}}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.ABSSendTimeURI}, webrtc.RTPCodecTypeVideo); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(me, reg); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureRTCPReports(reg); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureTWCCHeaderExtensionSender(me, reg); err != nil {
		return nil, err
	}

	se := webrtc.SettingEngine{LoggerFactory: pionLogs{log}}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(true)
	se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// peer is one participant of an SFU room as a browser would be: a WebSocket
// to /ws and one PeerConnection to the server. It offers first, right after
// joined, and from then on only answers the server's offers (the tool never
// renegotiates, so no offer of its own can cross the server's: pion cannot
// roll back).
type peer struct {
	// Static after construction.
	name string
	log  *slog.Logger
	ws   *websocket.Conn
	pc   *webrtc.PeerConnection
	rx   *receiver
	src  *source // nil for subscribers

	out       chan []byte   // to the writer; bounded
	stop      chan struct{} // closed by close
	closeOnce sync.Once
	readDone  chan struct{}
	connected chan struct{} // closed when the PeerConnection is connected
	connOnce  sync.Once
	iceUp     chan struct{} // closed when ICE has started checking
	iceOnce   sync.Once

	mu        sync.Mutex
	id        string                    // Guarded by mu: the participant id.
	descSent  bool                      // Guarded by mu: our offer went out.
	heldCands []webrtc.ICECandidateInit // Guarded by mu: gathered before.
	errs      []string                  // Guarded by mu: errors the server sent.
}

// dialPeer joins room on the server at base (http://host:port) and makes
// the first offer. A publisher (src not nil) sends src's video, and its
// audio if configured, once its connection is up; everyone records what it
// receives in rx.
func dialPeer(ctx context.Context, api *webrtc.API, base, room, name string, src *source, rx *receiver, log *slog.Logger) (*peer, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	u.Scheme, u.Path = "ws", "/ws"
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := dialer.DialContext(ctx, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", name, u, err)
	}
	p := &peer{
		name:      name,
		log:       log.With("peer", name),
		ws:        ws,
		rx:        rx,
		src:       src,
		out:       make(chan []byte, 64),
		stop:      make(chan struct{}),
		readDone:  make(chan struct{}),
		connected: make(chan struct{}),
		iceUp:     make(chan struct{}),
	}
	go p.writeLoop()
	fail := func(err error) (*peer, error) {
		p.close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}

	// Join and wait for joined.
	p.send(message{Type: "join", Room: room, Name: name})
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		var m message
		if err := ws.ReadJSON(&m); err != nil {
			return fail(fmt.Errorf("join: %w", err))
		}
		if m.Type == "error" {
			return fail(fmt.Errorf("join: %s: %s", m.Code, m.Message))
		}
		if m.Type == "joined" {
			if m.Mode != "sfu" {
				return fail(fmt.Errorf("join: room mode %q, not sfu", m.Mode))
			}
			p.mu.Lock()
			p.id = m.ID
			p.mu.Unlock()
			break
		}
	}
	_ = ws.SetReadDeadline(time.Time{})

	if p.pc, err = api.NewPeerConnection(webrtc.Configuration{}); err != nil {
		return fail(err)
	}
	if err := p.addTransceivers(); err != nil {
		return fail(err)
	}
	p.pc.OnICECandidate(p.onCandidate)
	p.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			p.connOnce.Do(func() { close(p.connected) })
		}
	})
	p.pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s != webrtc.ICEConnectionStateNew {
			p.iceOnce.Do(func() { close(p.iceUp) })
		}
	})
	p.pc.OnTrack(p.onTrack)

	offer, err := p.pc.CreateOffer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(offer)
	}
	if err != nil {
		return fail(fmt.Errorf("offer: %w", err))
	}
	p.mu.Lock()
	p.send(message{Type: "offer", To: sfuPeer, SDP: offer.SDP})
	p.descSent = true
	held := p.heldCands
	p.heldCands = nil
	for _, c := range held {
		p.send(message{Type: "candidate", To: sfuPeer, Candidate: &c})
	}
	p.mu.Unlock()
	go p.readLoop()
	return p, nil
}

// addTransceivers sets up what the peer offers: a publisher sends VP8 (and
// Opus) and can receive on those m-lines, as a browser with a camera; a
// subscriber offers to receive audio and video. Everything forwarded to
// either comes on m-lines the server adds.
func (p *peer) addTransceivers() error {
	if p.src == nil {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			if _, err := p.pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
				return err
			}
		}
		return nil
	}
	sendrecv := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv}
	if p.src.cfg.Audio {
		track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "mic", p.name)
		if err != nil {
			return err
		}
		tr, err := p.pc.AddTransceiverFromTrack(track, sendrecv)
		if err != nil {
			return err
		}
		p.src.audioSink = func(pkt *rtp.Packet) { _ = track.WriteRTP(pkt) }
		go p.readRTCP(tr.Sender())
	} else if _, err := p.pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, sendrecv); err != nil {
		return err
	}
	track, err := webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "cam", p.name)
	if err != nil {
		return err
	}
	tr, err := p.pc.AddTransceiverFromTrack(track, sendrecv)
	if err != nil {
		return err
	}
	p.src.videoSink = func(pkt *rtp.Packet) { _ = track.WriteRTP(pkt) }
	go p.readRTCP(tr.Sender())
	return nil
}

// readRTCP reads a sender's RTCP, which drives its NACK responder, and asks
// the source for a keyframe on PLI or FIR.
func (p *peer) readRTCP(s *webrtc.RTPSender) {
	errs := 0
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			// A malformed packet is skipped; a closed sender or a run of
			// errors ends the loop.
			if errs++; errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errs > 100 {
				return
			}
			continue
		}
		errs = 0
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.src.keyframe.Store(true)
			}
		}
	}
}

// onTrack records a forwarded track's packets until it ends.
func (p *peer) onTrack(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	buf := make([]byte, 1600)
	var st ssrcState
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		p.rx.handle(&st, buf[:n], time.Now())
	}
}

func (p *peer) onCandidate(c *webrtc.ICECandidate) {
	if c == nil {
		return
	}
	init := c.ToJSON()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.descSent {
		p.heldCands = append(p.heldCands, init)
		return
	}
	p.send(message{Type: "candidate", To: sfuPeer, Candidate: &init})
}

// readLoop handles the server's messages in order until the socket closes.
func (p *peer) readLoop() {
	defer close(p.readDone)
	for {
		var m message
		if err := p.ws.ReadJSON(&m); err != nil {
			select {
			case <-p.stop:
			default:
				p.log.Warn("signaling closed", "err", err)
			}
			return
		}
		if m.From != sfuPeer && (m.Type == "offer" || m.Type == "answer" || m.Type == "candidate") {
			continue
		}
		var err error
		switch m.Type {
		case "offer":
			err = p.answer(m.SDP)
		case "answer":
			err = p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: m.SDP})
		case "candidate":
			if m.Candidate != nil && m.Candidate.Candidate != "" {
				err = p.pc.AddICECandidate(*m.Candidate)
			}
		case "error":
			p.mu.Lock()
			p.errs = append(p.errs, m.Code+": "+m.Message)
			p.mu.Unlock()
			p.log.Warn("server error", "code", m.Code, "message", m.Message)
		case "bye":
			return
		}
		if err != nil && p.pc.ConnectionState() != webrtc.PeerConnectionStateClosed {
			p.log.Warn("signaling", "type", m.Type, "err", err)
		}
	}
}

// answer applies a server offer and sends the answer.
func (p *peer) answer(offer string) error {
	// pion starts ICE on its own goroutine after the server's answer is
	// applied; an offer applied before that looks like an ICE restart to
	// it (the remote credentials it compares with are not set yet), and
	// it restarts its agent with new credentials, which the server then
	// refuses candidates of. The server offers right after its answer when
	// the room has tracks, so this happens under load. Browsers do not.
	select {
	case <-p.iceUp:
	case <-p.stop:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("ICE did not start within 10 s of the server's answer")
	}
	// pion (v4.2.26) stops a transceiver for good when an offer says
	// inactive, and then never reports a track the server later forwards
	// on that reused m-line; recvonly has the same effect for a
	// receive-only m-line without that (see sfu/client_test.go).
	offer = strings.ReplaceAll(offer, "a=inactive\r\n", "a=recvonly\r\n")
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return fmt.Errorf("set offer: %w", err)
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err == nil {
		err = p.pc.SetLocalDescription(answer)
	}
	if err != nil {
		return fmt.Errorf("answer: %w", err)
	}
	p.send(message{Type: "answer", To: sfuPeer, SDP: answer.SDP})
	return nil
}

// send queues a message for the writer. The queue is bounded: a server
// that stops reading fails the peer instead of growing it.
func (p *peer) send(m message) {
	b, err := json.Marshal(m)
	if err != nil {
		panic(err) // only our own types
	}
	select {
	case p.out <- b:
	case <-p.stop:
	default:
		p.log.Warn("signaling queue full, closing")
		go p.close()
	}
}

func (p *peer) writeLoop() {
	for {
		select {
		case <-p.stop:
			return
		case b := <-p.out:
			_ = p.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := p.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				p.log.Warn("signaling write", "err", err)
				go p.close()
				return
			}
		}
	}
}

// serverErrors returns the error messages the server sent.
func (p *peer) serverErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errs...)
}

// close ends the peer: the PeerConnection, then the WebSocket.
func (p *peer) close() {
	p.closeOnce.Do(func() {
		close(p.stop)
		if p.pc != nil {
			_ = p.pc.Close()
		}
		_ = p.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = p.ws.Close()
	})
}

// pionLogs routes pion's logs into slog: its warnings and errors only,
// as debug (pion warns about normal events like closing streams).
type pionLogs struct{ log *slog.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: f.log.With("scope", scope)}
}

type pionLogger struct{ log *slog.Logger }

func (l pionLogger) logf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (pionLogger) Trace(string)          {}
func (pionLogger) Tracef(string, ...any) {}
func (pionLogger) Debug(string)          {}
func (pionLogger) Debugf(string, ...any) {}
func (pionLogger) Info(string)           {}
func (pionLogger) Infof(string, ...any)  {}
func (l pionLogger) Warn(msg string)     { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Warnf(format string, args ...any) {
	l.logf(slog.LevelDebug, format, args...)
}
func (l pionLogger) Error(msg string) { l.logf(slog.LevelDebug, "%s", msg) }
func (l pionLogger) Errorf(format string, args ...any) {
	l.logf(slog.LevelDebug, format, args...)
}
