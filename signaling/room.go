package signaling

import (
	"time"

	"github.com/parley-chat/parley/config"
)

// roomIDBytes is the entropy of a room id: 128 bits, so ids cannot be guessed.
const roomIDBytes = 16

// room is one call. Its fields other than id, tag, mode and password are
// guarded by Server.mu.
type room struct {
	id       string // secret: knowing it lets you in
	tag      string // non-secret name for logs
	mode     string
	password *roomPassword // nil: none needed

	members    map[string]*client // by participant id
	order      []string           // participant ids in join order
	emptySince time.Time          // when the last member left (or creation); zero while occupied
}

// createRoom makes a new empty room; password "" means none.
func (s *Server) createRoom(mode, password string) *room {
	id := randomID(roomIDBytes)
	rm := &room{
		id:         id,
		tag:        logTag(id),
		mode:       mode,
		password:   newRoomPassword(password),
		members:    make(map[string]*client),
		emptySince: s.now(),
	}
	s.mu.Lock()
	s.byID[id] = rm
	n := len(s.byID)
	s.mu.Unlock()
	s.counts.rooms.Add(1)
	s.log.Info("room created", "room", rm.tag, "mode", mode, "password", rm.password != nil, "rooms", n)
	return rm
}

// lookupLocked returns the room with the given id, or nil if there is none or
// it has been empty for longer than the TTL (it is then deleted). s.mu is held.
func (s *Server) lookupLocked(id string) *room {
	rm := s.byID[id]
	if rm == nil {
		return nil
	}
	if len(rm.members) == 0 && s.now().Sub(rm.emptySince) > s.rooms.EmptyTTL {
		delete(s.byID, id)
		s.log.Info("room expired", "room", rm.tag)
		return nil
	}
	return rm
}

// join puts c into the room named by m. On success c is told who is there and
// the others are told about c.
func (s *Server) join(c *client, m *Message) *ProtocolError {
	// The id and ICE servers are made before taking the lock so that joined
	// can be queued under it: then nothing about the room (a peer-joined, a
	// peer-left, an offer) can reach c before its joined.
	id := randomID(9)
	var ice []ICEServer
	if s.ice != nil {
		ice = s.ice.ICEServers(id)
	}
	if ice == nil {
		ice = []ICEServer{}
	}

	s.mu.Lock()
	if c.room != nil {
		s.mu.Unlock()
		return protoErr(CodeAlreadyJoined, m.Type, "already in a room; send leave first")
	}
	rm := s.lookupLocked(m.Room)
	if rm == nil {
		s.mu.Unlock()
		return protoErr(CodeRoomNotFound, m.Type, "this room does not exist or has expired")
	}
	if rm.password != nil {
		if m.Password == "" {
			s.mu.Unlock()
			return protoErr(CodePasswordRequired, m.Type, "this room needs a password")
		}
		if !rm.password.matches(m.Password) {
			s.mu.Unlock()
			return protoErr(CodeBadPassword, m.Type, "wrong password for this room")
		}
	}
	if len(rm.members) >= s.rooms.MaxParticipants {
		s.mu.Unlock()
		return protoErr(CodeRoomFull, m.Type, "this room is full (%d participants)", s.rooms.MaxParticipants)
	}
	peers := make([]PeerInfo, 0, len(rm.order))
	others := make([]*client, 0, len(rm.order))
	for _, pid := range rm.order {
		o := rm.members[pid]
		peers = append(peers, PeerInfo{ID: pid, Name: o.name})
		others = append(others, o)
	}
	rm.members[id] = c
	rm.order = append(rm.order, id)
	rm.emptySince = time.Time{}
	c.room, c.id, c.name = rm, id, m.Name
	count := len(rm.members)
	// send only queues, so it may be called under the lock.
	c.send(encode(joinedMsg{
		Type: TypeJoined, Room: rm.id, Mode: rm.mode, ID: id, Name: m.Name,
		Peers: peers, ICEServers: ice,
	}))
	s.mu.Unlock()

	announce := encode(peerJoinedMsg{Type: TypePeerJoined, Peer: PeerInfo{ID: id, Name: m.Name}})
	for _, o := range others {
		o.send(announce)
	}
	s.log.Info("participant joined", "room", rm.tag, "participant", id, "participants", count)
	if rm.mode == config.ModeSFU {
		s.joinMedia(c, rm, id)
	}
	return nil
}

// joinMedia connects a participant of an SFU room to the media server. If
// that fails the participant stays in the room (it still sees who is there)
// and is told why it gets no media.
func (s *Server) joinMedia(c *client, rm *room, id string) {
	if s.media == nil {
		c.sendError(protoErr(CodeBadMessage, TypeJoin, "this server has no SFU"))
		return
	}
	sess, err := s.media.Join(rm.id, id, mediaOut{c})
	if err != nil {
		s.log.Warn("join media server", "room", rm.tag, "participant", id, "err", err)
		c.sendError(protoErr(CodeMediaUnavailable, TypeJoin, "the media server could not take you: %v", err))
		return
	}
	s.mu.Lock()
	stale := c.room != rm || c.id != id // left while the media server was joining
	if !stale {
		c.media = sess
	}
	s.mu.Unlock()
	if stale {
		sess.Close()
	}
}

// leave takes c out of its room, if it is in one, and tells the others why.
func (s *Server) leave(c *client, reason string) bool {
	s.mu.Lock()
	rm := c.room
	if rm == nil {
		s.mu.Unlock()
		return false
	}
	id := c.id
	delete(rm.members, id)
	for i, pid := range rm.order {
		if pid == id {
			rm.order = append(rm.order[:i], rm.order[i+1:]...)
			break
		}
	}
	if len(rm.members) == 0 {
		rm.emptySince = s.now()
	}
	var others []*client
	// While shutting down everyone is sent bye, which must be followed by
	// nothing but the close frame.
	if !s.closing {
		others = make([]*client, 0, len(rm.members))
		for _, o := range rm.members {
			others = append(others, o)
		}
	}
	sess := c.media
	c.room, c.id, c.media = nil, "", nil
	count := len(rm.members)
	s.mu.Unlock()

	if sess != nil {
		sess.Close()
	}

	msg := encode(peerLeftMsg{Type: TypePeerLeft, ID: id, Reason: reason})
	for _, o := range others {
		o.send(msg)
	}
	s.log.Info("participant left", "room", rm.tag, "participant", id, "reason", reason, "participants", count)
	return true
}

// relay forwards an offer, answer or candidate to its addressee, or a media
// state to everyone else in the room.
func (s *Server) relay(c *client, m *Message) *ProtocolError {
	s.mu.Lock()
	rm := c.room
	if rm == nil {
		s.mu.Unlock()
		return protoErr(CodeNotJoined, m.Type, "join a room first")
	}
	from := c.id
	if m.To == SFUPeerID && m.Type != TypeMedia {
		s.mu.Unlock()
		return s.toMedia(c, m)
	}
	var targets []*client
	if m.Type == TypeMedia {
		targets = make([]*client, 0, len(rm.members))
		for pid, o := range rm.members {
			if pid != from {
				targets = append(targets, o)
			}
		}
	} else if to := rm.members[m.To]; to != nil && to != c {
		targets = []*client{to}
	}
	s.mu.Unlock()

	if m.Type != TypeMedia && targets == nil {
		return protoErr(CodePeerNotFound, m.Type, "no participant %q in your room", truncate(m.To, 32))
	}
	out := encode(relayMsg{
		Type: m.Type, From: from, SDP: m.SDP, Candidate: m.Candidate,
		Audio: m.Audio, Video: m.Video, Screen: m.Screen,
	})
	for _, t := range targets {
		t.send(out)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
