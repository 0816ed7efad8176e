package sfu

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// chromeOffer is the shape of a browser's first offer in an SFU room: audio
// and video, sendrecv, trickle ICE (no candidates yet).
var chromeOffer = strings.ReplaceAll(`v=0
o=- 4611731400430051336 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
a=extmap-allow-mixed
a=msid-semantic: WMS stream
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:QsCd
a=ice-pwd:jmXZbWlGf7O4S6OeP7JEv0+3
a=ice-options:trickle
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08
a=setup:actpass
a=mid:0
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=sendrecv
a=msid:stream 5a5e7b2c-5f1e-4c6b-9f7e-0f0f0f0f0f0f
a=rtcp-mux
a=rtpmap:111 opus/48000/2
a=rtcp-fb:111 transport-cc
a=fmtp:111 minptime=10;useinbandfec=1
a=rtpmap:63 red/48000/2
a=fmtp:63 111/111
a=rtpmap:9 G722/8000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:13 CN/8000
a=rtpmap:110 telephone-event/48000
a=rtpmap:126 telephone-event/8000
a=ssrc:1001 cname:abc
a=ssrc:1001 msid:stream 5a5e7b2c-5f1e-4c6b-9f7e-0f0f0f0f0f0f
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103
c=IN IP4 0.0.0.0
a=rtcp:9 IN IP4 0.0.0.0
a=ice-ufrag:QsCd
a=ice-pwd:jmXZbWlGf7O4S6OeP7JEv0+3
a=ice-options:trickle
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08
a=setup:actpass
a=mid:1
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:13 urn:3gpp:video-orientation
a=sendrecv
a=msid:stream 6b6e7b2c-5f1e-4c6b-9f7e-0f0f0f0f0f0f
a=rtcp-mux
a=rtcp-rsize
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 transport-cc
a=rtcp-fb:96 ccm fir
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=rtcp-fb:102 goog-remb
a=rtcp-fb:102 nack pli
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f
a=rtpmap:103 rtx/90000
a=fmtp:103 apt=102
a=ssrc-group:FID 2001 2002
a=ssrc:2001 cname:abc
a=ssrc:2001 msid:stream 6b6e7b2c-5f1e-4c6b-9f7e-0f0f0f0f0f0f
a=ssrc:2002 cname:abc
a=ssrc:2002 msid:stream 6b6e7b2c-5f1e-4c6b-9f7e-0f0f0f0f0f0f
`, "\n", "\r\n")

func TestParseSDPAcceptsABrowserOffer(t *testing.T) {
	if _, err := parseSDP(webrtc.SDPTypeOffer, chromeOffer); err != nil {
		t.Fatal(err)
	}
}

// A browser's offer is applied to a real participant: the server answers
// with Opus and VP8.
func TestBrowserOfferIsAnswered(t *testing.T) {
	s := newTestSFU(t, Options{})
	sig := &recordingSignaler{answers: make(chan string, 1)}
	p, err := s.Join("room", "browser", sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.HandleOffer(chromeOffer); err != nil {
		t.Fatal(err)
	}
	answer := <-sig.answers
	for _, want := range []string{"a=rtpmap:111 opus/48000/2", "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 goog-remb", "a=rtcp-fb:96 transport-cc"} {
		if !strings.Contains(answer, want) {
			t.Errorf("answer lacks %q:\n%s", want, answer)
		}
	}
	if strings.Contains(answer, "rtx/90000") {
		t.Errorf("answer negotiates RTX:\n%s", answer)
	}
}

// A publisher offering H.264 first is answered with VP8 first, so that it
// sends what every subscriber's browser decodes; H.264 stays negotiated.
func TestPublishersAreAskedForVP8(t *testing.T) {
	s := newTestSFU(t, Options{})
	sig := &recordingSignaler{answers: make(chan string, 1)}
	p, err := s.Join("room", "safari", sig)
	if err != nil {
		t.Fatal(err)
	}
	offer := strings.Replace(chromeOffer, "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103", "m=video 9 UDP/TLS/RTP/SAVPF 102 103 96 97", 1)
	if err := p.HandleOffer(offer); err != nil {
		t.Fatal(err)
	}
	answer := <-sig.answers
	if !strings.Contains(answer, "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\n") {
		t.Errorf("video not answered as VP8, H.264:\n%s", answer)
	}
}

// The public IP is advertised as a host candidate, in addition to the
// address the socket is bound to, on the UDP and the TCP port. (The
// "browser" here only offers: nothing is sent to that address.)
func TestPublicIPAdvertised(t *testing.T) {
	s := newTestSFU(t, Options{PublicIP: "203.0.113.10"})
	sig := &recordingSignaler{answers: make(chan string, 1), candidates: make(chan string, 16)}
	p, err := s.Join("room", "browser", sig)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.HandleOffer(chromeOffer); err != nil {
		t.Fatal(err)
	}
	<-sig.answers
	want := map[string]bool{"udp 203.0.113.10": false, "tcp 203.0.113.10": false, "udp 127.0.0.1": false, "tcp 127.0.0.1": false}
	timeout := time.After(5 * time.Second)
	for slices.Contains(slices.Collect(maps.Values(want)), false) {
		select {
		case c := <-sig.candidates:
			f := strings.Fields(c) // candidate:foundation component network priority address port typ host
			if len(f) > 7 && f[7] == "host" {
				want[strings.ToLower(f[2])+" "+f[4]] = true
			}
		case <-timeout:
			t.Fatalf("candidates seen: %v", want)
		}
	}
}

type recordingSignaler struct {
	answers    chan string
	candidates chan string // nil: not recorded
}

func (r *recordingSignaler) SendOffer(string) {}
func (r *recordingSignaler) SendAnswer(sdp string) {
	select {
	case r.answers <- sdp:
	default:
	}
}
func (r *recordingSignaler) SendCandidate(c webrtc.ICECandidateInit) {
	if r.candidates == nil {
		return
	}
	select {
	case r.candidates <- c.Candidate:
	default:
	}
}

// FuzzParseSDP: whatever a browser sends, the check returns (no panic).
func FuzzParseSDP(f *testing.F) {
	f.Add(chromeOffer)
	f.Add("v=0\r\n")
	f.Add(strings.Replace(chromeOffer, "a=mid:1", "a=mid:0", 1))
	f.Fuzz(func(t *testing.T, text string) {
		_, _ = parseSDP(webrtc.SDPTypeOffer, text)
		_, _ = parseSDP(webrtc.SDPTypeAnswer, text)
	})
}

// FuzzHandleCandidate: a candidate is accepted or refused, never a panic,
// whatever its text.
func FuzzHandleCandidate(f *testing.F) {
	f.Add("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host")
	f.Add("candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active")
	f.Add("candidate:3 1 udp 1686052607 203.0.113.7 61000 typ srflx raddr 0.0.0.0 rport 0")
	f.Add("")
	s := newTestSFU(f, Options{})
	p, err := s.Join("room", "fuzz", &recordingSignaler{answers: make(chan string, 1)})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, text string) {
		_ = p.HandleCandidate(webrtc.ICECandidateInit{Candidate: text})
	})
}
