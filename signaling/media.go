package signaling

// SFUPeerID is the participant id that stands for the server itself in SFU
// rooms: clients address their offers, answers and candidates to it, and the
// server's come from it.
const SFUPeerID = "sfu"

// MediaServer is the SFU as signaling drives it. The sfu package satisfies it
// (through a small adapter in cmd/parley); signaling knows nothing of
// PeerConnections.
type MediaServer interface {
	// Join adds a participant of an SFU room. out is how the media server
	// talks back to that participant's browser; it must not block.
	Join(roomID, participantID string, out MediaSignaler) (MediaSession, error)
}

// MediaSignaler carries the media server's side of the negotiation to one
// participant.
type MediaSignaler interface {
	SendOffer(sdp string)
	SendAnswer(sdp string)
	SendCandidate(c Candidate)
}

// MediaSession is one participant's connection to the media server.
type MediaSession interface {
	HandleOffer(sdp string) error
	HandleAnswer(sdp string) error
	HandleCandidate(c Candidate) error
	// Close takes the participant's tracks away from everyone and ends its
	// connection.
	Close()
}

// mediaOut is a client's MediaSignaler: it queues the server's messages as if
// they came from the participant "sfu".
type mediaOut struct{ c *client }

func (m mediaOut) SendOffer(sdp string) {
	m.c.send(encode(relayMsg{Type: TypeOffer, From: SFUPeerID, SDP: sdp}))
}

func (m mediaOut) SendAnswer(sdp string) {
	m.c.send(encode(relayMsg{Type: TypeAnswer, From: SFUPeerID, SDP: sdp}))
}

func (m mediaOut) SendCandidate(cand Candidate) {
	m.c.send(encode(relayMsg{Type: TypeCandidate, From: SFUPeerID, Candidate: &cand}))
}

// toMedia hands an offer, answer or candidate addressed to "sfu" to the
// client's media session.
func (s *Server) toMedia(c *client, m *Message) *ProtocolError {
	s.mu.Lock()
	sess := c.media
	s.mu.Unlock()
	if sess == nil {
		return protoErr(CodePeerNotFound, m.Type, "this is not an SFU room; address peers by their id")
	}
	var err error
	switch m.Type {
	case TypeOffer:
		err = sess.HandleOffer(m.SDP)
	case TypeAnswer:
		err = sess.HandleAnswer(m.SDP)
	case TypeCandidate:
		err = sess.HandleCandidate(*m.Candidate)
	}
	if err != nil {
		s.log.Debug("media server refused a message", "type", m.Type, "err", err)
		return protoErr(CodeBadMessage, m.Type, "the media server could not use this %s: %v", m.Type, err)
	}
	return nil
}
