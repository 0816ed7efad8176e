package main

import (
	"github.com/pion/webrtc/v4"

	"github.com/parley-chat/parley/sfu"
	"github.com/parley-chat/parley/signaling"
)

// mediaServer adapts the SFU to the interface signaling drives it through,
// translating candidates between the two packages' (identical) shapes.
type mediaServer struct{ s *sfu.SFU }

func (m mediaServer) Join(roomID, participantID string, out signaling.MediaSignaler) (signaling.MediaSession, error) {
	p, err := m.s.Join(roomID, participantID, sfuSignaler{out})
	if err != nil {
		return nil, err
	}
	return mediaSession{p}, nil
}

// sfuSignaler carries the SFU's messages out through signaling.
type sfuSignaler struct{ out signaling.MediaSignaler }

func (s sfuSignaler) SendOffer(sdp string)  { s.out.SendOffer(sdp) }
func (s sfuSignaler) SendAnswer(sdp string) { s.out.SendAnswer(sdp) }
func (s sfuSignaler) SendCandidate(c webrtc.ICECandidateInit) {
	s.out.SendCandidate(signaling.Candidate{
		Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex, UsernameFragment: c.UsernameFragment,
	})
}

// mediaSession hands a participant's messages to its SFU connection.
type mediaSession struct{ p *sfu.Participant }

func (m mediaSession) HandleOffer(sdp string) error  { return m.p.HandleOffer(sdp) }
func (m mediaSession) HandleAnswer(sdp string) error { return m.p.HandleAnswer(sdp) }
func (m mediaSession) Close()                        { m.p.Close() }
func (m mediaSession) HandleCandidate(c signaling.Candidate) error {
	return m.p.HandleCandidate(webrtc.ICECandidateInit{
		Candidate: c.Candidate, SDPMid: c.SDPMid, SDPMLineIndex: c.SDPMLineIndex, UsernameFragment: c.UsernameFragment,
	})
}
