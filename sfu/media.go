package sfu

import (
	"strings"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// Liveness. A publisher's browser sends RTP all the time (audio every 20 ms
// even when muted, video frames even when the camera is off), so a second
// without any of its packets means its machine or network is gone: its
// tracks are then taken away from the others (see SFU.watchLoop), which with
// the watch cadence happens 1.0–1.25 s after the last packet, leaving time
// for the renegotiation within the 2 s budget. Should packets come back, the
// tracks come back. This is watched by one ticker for the whole SFU, not by
// ICE: ICE would need a consent check every 250 ms on every PeerConnection to
// notice as fast, and those checks and timers cost more than the forwarding
// itself in a big room of mostly silent subscribers. ICE keeps its own,
// slower timeouts for connections that carry nothing the SFU watches; after
// iceFailed more seconds it gives up, which a browser can still undo with an
// ICE restart; by then the signaling connection has normally timed out and
// the participant has been closed.
const (
	silenceTimeout  = time.Second
	watchInterval   = 250 * time.Millisecond
	iceDisconnected = 5 * time.Second
	iceFailed       = 10 * time.Second
	iceKeepalive    = 2 * time.Second
)

// videoOrientationURI is the RTP header extension that tells a receiver how
// to rotate the picture (phones held upright).
const videoOrientationURI = "urn:3gpp:video-orientation"

// Feedback the SFU negotiates. Towards publishers it offers TWCC (so browsers
// run their own send-side congestion control on the uplink) and accepts
// REMB, NACK, PLI and FIR. On forwarded tracks it leaves TWCC out, so
// subscribers' browsers estimate the downlink themselves and report it as
// REMB; see downFeedback.
var (
	videoFeedback = []webrtc.RTCPFeedback{
		{Type: webrtc.TypeRTCPFBGoogREMB},
		{Type: webrtc.TypeRTCPFBTransportCC},
		{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
		{Type: webrtc.TypeRTCPFBNACK},
		{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"},
	}
	audioFeedback = []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}}
)

// codecs are the codecs every SFU PeerConnection supports. A publisher's
// codec is forwarded as it is (no transcoding); Opus and VP8 are what every
// browser has. There is no RTX: publishers then retransmit on the media SSRC,
// which the NACK generator sees (it does not look at RTX streams), and the
// SFU retransmits to subscribers on the media SSRC too.
var codecs = []struct {
	kind webrtc.RTPCodecType
	webrtc.RTPCodecParameters
}{
	{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1", RTCPFeedback: audioFeedback}}},
	{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{PayloadType: 96, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback}}},
	{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{PayloadType: 98, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0", RTCPFeedback: videoFeedback}}},
	{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{PayloadType: 100, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=2", RTCPFeedback: videoFeedback}}},
	{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{PayloadType: 102, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: videoFeedback,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"}}},
	{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{PayloadType: 104, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: videoFeedback,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"}}},
	{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{PayloadType: 106, RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: videoFeedback,
		SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"}}},
}

// headerExtensions are the RTP header extensions the SFU negotiates. mid lets
// pion route packets whose SSRC was not signalled; transport-cc carries the
// publishers' TWCC sequence numbers; abs-send-time is stamped by the SFU on
// forwarded video for the subscribers' REMB estimator; audio level and video
// orientation are passed through to subscribers.
var headerExtensions = []struct {
	kind webrtc.RTPCodecType
	uri  string
}{
	{webrtc.RTPCodecTypeAudio, sdp.SDESMidURI},
	{webrtc.RTPCodecTypeVideo, sdp.SDESMidURI},
	{webrtc.RTPCodecTypeAudio, sdp.TransportCCURI},
	{webrtc.RTPCodecTypeVideo, sdp.TransportCCURI},
	{webrtc.RTPCodecTypeAudio, sdp.AudioLevelURI},
	{webrtc.RTPCodecTypeVideo, sdp.ABSSendTimeURI},
	{webrtc.RTPCodecTypeVideo, videoOrientationURI},
}

// forwardedExtensions are the header extensions copied from a publisher's
// packets to the subscribers' (with the subscriber's IDs). The others are
// per hop (transport-cc, abs-send-time) or only for demultiplexing (mid).
var forwardedExtensions = map[string]bool{
	sdp.AudioLevelURI:   true,
	videoOrientationURI: true,
}

// downFeedback is the feedback offered on a forwarded track: what the SFU
// answers to (NACK from its cache, PLI/FIR forwarded to the publisher, REMB
// aggregated), without transport-cc.
func downFeedback(kind webrtc.RTPCodecType) []webrtc.RTCPFeedback {
	if kind != webrtc.RTPCodecTypeVideo {
		return nil
	}
	return []webrtc.RTCPFeedback{
		{Type: webrtc.TypeRTCPFBGoogREMB},
		{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
		{Type: webrtc.TypeRTCPFBNACK},
		{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"},
	}
}

// newAPI builds the webrtc.API of one PeerConnection: its own MediaEngine
// (pion records the payload types negotiated with that peer in it) and its
// own interceptors (their state is per peer).
func (s *SFU) newAPI() (*webrtc.API, error) {
	me := &webrtc.MediaEngine{}
	for _, c := range codecs {
		if err := me.RegisterCodec(c.RTPCodecParameters, c.kind); err != nil {
			return nil, err
		}
	}
	for _, e := range headerExtensions {
		if err := me.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: e.uri}, e.kind); err != nil {
			return nil, err
		}
	}

	// The order matters: RTCP written by an interceptor passes those added
	// before it, so the counter, first, sees the generator's NACKs.
	// There is no NACK responder: pion's copies every packet sent into a
	// cache per subscriber, which cmd/parley-load measured at 12% of the
	// server's CPU and 1.5 MB per forwarded video track; the SFU resends
	// from one history per published track instead (pubTrack.history).
	reg := &interceptor.Registry{}
	reg.Add(&counterFactory{stats: &s.stats})
	generator, err := nack.NewGeneratorInterceptor(
		nack.WithGeneratorLoggerFactory(s.pionLogs),
		// A retransmission the publisher no longer has is not worth asking
		// for forever; the subscriber's PLI recovers from the loss.
		nack.GeneratorMaxNacksPerPacket(5),
	)
	if err != nil {
		return nil, err
	}
	// NACKs and receiver reports are for what a participant publishes,
	// sender reports for what it receives: each ticker starts with its
	// first stream (see lazyFactory).
	reg.Add(&lazyFactory{inner: generator, remote: true})
	rr, err := report.NewReceiverInterceptor(report.WithReceiverLoggerFactory(s.pionLogs))
	if err != nil {
		return nil, err
	}
	reg.Add(&lazyFactory{inner: rr, remote: true})
	sr, err := report.NewSenderInterceptor(report.WithSenderLoggerFactory(s.pionLogs))
	if err != nil {
		return nil, err
	}
	reg.Add(&lazyFactory{inner: sr})
	// TWCC feedback for what publishers send (only streams that negotiated
	// the transport-cc header extension, i.e. the publishers' ones).
	fb, err := twcc.NewSenderInterceptor(twcc.WithLoggerFactory(s.pionLogs))
	if err != nil {
		return nil, err
	}
	reg.Add(fb)

	return webrtc.NewAPI(
		webrtc.WithMediaEngine(me),
		webrtc.WithInterceptorRegistry(reg),
		webrtc.WithSettingEngine(s.settings),
	), nil
}

// codecMatches reports whether a negotiated codec can carry packets of codec
// have without any change: the same format, and for H.264 and VP9 the same
// profile and packetization.
func codecMatches(have, negotiated webrtc.RTPCodecCapability) bool {
	if !strings.EqualFold(have.MimeType, negotiated.MimeType) {
		return false
	}
	a, b := parseFmtp(have.SDPFmtpLine), parseFmtp(negotiated.SDPFmtpLine)
	switch strings.ToLower(have.MimeType) {
	case strings.ToLower(webrtc.MimeTypeH264):
		pa, pb := a["profile-level-id"], b["profile-level-id"]
		// Profile and constraint bytes must agree; the level may differ
		// (level-asymmetry-allowed).
		if len(pa) < 4 || len(pb) < 4 || !strings.EqualFold(pa[:4], pb[:4]) {
			return false
		}
		return defaulted(a["packetization-mode"], "0") == defaulted(b["packetization-mode"], "0")
	case strings.ToLower(webrtc.MimeTypeVP9):
		return defaulted(a["profile-id"], "0") == defaulted(b["profile-id"], "0")
	}
	return true
}

func parseFmtp(line string) map[string]string {
	m := map[string]string{}
	for _, kv := range strings.Split(line, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if k != "" {
			m[strings.ToLower(k)] = v
		}
	}
	return m
}

func defaulted(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// lazyFactory builds interceptors whose periodic work starts with the
// first stream they have work for. pion's NACK generator and report
// interceptors each run a ticker for every PeerConnection from the moment it
// is created, whether or not it ever has such a stream: in a big room most
// PeerConnections only receive (or only send), and hundreds of idle tickers
// waking the runtime were a good part of the SFU's cost per forwarded
// packet. The inner interceptor must pass the RTCP writer through
// unchanged, as those do.
type lazyFactory struct {
	inner  interceptor.Factory
	remote bool // start on the first remote (published) stream, else the first local one
}

func (f *lazyFactory) NewInterceptor(id string) (interceptor.Interceptor, error) {
	i, err := f.inner.NewInterceptor(id)
	if err != nil {
		return nil, err
	}
	return &lazy{Interceptor: i, remote: f.remote}, nil
}

type lazy struct {
	interceptor.Interceptor
	remote bool

	once   sync.Once
	mu     sync.Mutex
	writer interceptor.RTCPWriter // guarded by mu
}

// BindRTCPWriter keeps the writer for start.
func (l *lazy) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writer = w
	return w
}

func (l *lazy) start() {
	l.once.Do(func() {
		l.mu.Lock()
		w := l.writer
		l.mu.Unlock()
		if w != nil {
			l.Interceptor.BindRTCPWriter(w)
		}
	})
}

func (l *lazy) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	if l.remote {
		l.start()
	}
	return l.Interceptor.BindRemoteStream(info, r)
}

func (l *lazy) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !l.remote {
		l.start()
	}
	return l.Interceptor.BindLocalStream(info, w)
}

// counterFactory builds the interceptor that counts the NACKs the
// generator sends to publishers. (Resends to subscribers are counted where
// they are made, in downTrack.rtcpLoop.)
type counterFactory struct {
	stats *counters
}

func (f *counterFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &counter{stats: f.stats}, nil
}

type counter struct {
	interceptor.NoOp
	stats *counters
}

// BindRTCPWriter counts the NACKs the generator sends to publishers.
func (c *counter) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	return interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, a interceptor.Attributes) (int, error) {
		for _, p := range pkts {
			if n, ok := p.(*rtcp.TransportLayerNack); ok {
				for _, pair := range n.Nacks {
					c.stats.nacksSent.Add(uint64(len(pair.PacketList())))
				}
			}
		}
		return w.Write(pkts, a)
	})
}
