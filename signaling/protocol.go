package signaling

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on what a client may send. docs/protocol.md is the public description.
const (
	// MaxFrameSize is the largest WebSocket frame the server accepts. Bigger
	// frames are discarded and answered with too_large.
	MaxFrameSize = 64 << 10
	// MaxSDPSize is the largest SDP the server relays.
	MaxSDPSize = 32 << 10
	// MaxNameLength is the longest display name, in characters.
	MaxNameLength = 64
	// MaxPasswordLength is the longest room password, in bytes.
	MaxPasswordLength = 256
	// maxCandidateSize bounds one ICE candidate line.
	maxCandidateSize = 1024
	// hardFrameLimit is the frame size at which the connection is closed instead
	// of the frame being drained: nobody sends a megabyte of signaling by mistake.
	hardFrameLimit = 1 << 20
)

// Message types.
const (
	TypeJoin       = "join"
	TypeLeave      = "leave"
	TypeOffer      = "offer"
	TypeAnswer     = "answer"
	TypeCandidate  = "candidate"
	TypeMedia      = "media"
	TypeJoined     = "joined"
	TypePeerJoined = "peer-joined"
	TypePeerLeft   = "peer-left"
	TypeError      = "error"
	TypeBye        = "bye"
)

// Error codes sent to clients. They are stable: clients switch on them.
const (
	CodeBadMessage    = "bad_message"
	CodeUnknownType   = "unknown_type"
	CodeTooLarge      = "too_large"
	CodeNotJoined     = "not_joined"
	CodeAlreadyJoined = "already_joined"
	CodeRoomNotFound  = "room_not_found"
	CodeRoomFull      = "room_full"
	CodePeerNotFound  = "peer_not_found"
	CodeRateLimited   = "rate_limited"
	// CodeMediaUnavailable: the SFU could not take the participant.
	CodeMediaUnavailable = "media_unavailable"
	// CodePasswordRequired and CodeBadPassword refuse a join of a room with a
	// password; the connection stays open and may join again.
	CodePasswordRequired = "password_required"
	CodeBadPassword      = "bad_password"
)

// Error codes of the HTTP API (in {"error":{"code","message"}}), besides
// CodeBadMessage, CodeTooLarge and CodeRoomNotFound.
const (
	CodeBadMode             = "bad_mode"
	CodeUnsupportedMode     = "unsupported_mode"
	CodeCreateTokenRequired = "create_token_required" // 401: --create-token is set and none was given
	CodeBadCreateToken      = "bad_create_token"      // 403: the token given is not the one
	CodeTooManyRooms        = "too_many_rooms"        // 429: this address created its rooms for the hour
	CodeTooManyConnections  = "too_many_connections"  // 429: this address holds its WebSockets already
	CodeShuttingDown        = "shutting_down"
	CodeBadHandshake        = "bad_handshake"
)

// Leave reasons in peer-left.
const (
	ReasonLeft         = "left"
	ReasonDisconnected = "disconnected"
	ReasonTimeout      = "timeout"
)

// Message is one decoded client message. Which fields are set depends on Type;
// Decode has checked that the ones Type needs are present and well-formed.
type Message struct {
	Type      string     `json:"type"`
	Room      string     `json:"room,omitempty"`
	Name      string     `json:"name,omitempty"`
	Password  string     `json:"password,omitempty"`
	To        string     `json:"to,omitempty"`
	SDP       string     `json:"sdp,omitempty"`
	Candidate *Candidate `json:"candidate,omitempty"`
	Audio     *bool      `json:"audio,omitempty"`
	Video     *bool      `json:"video,omitempty"`
	Screen    *bool      `json:"screen,omitempty"`
}

// Candidate is an RTCIceCandidateInit as browsers serialize it.
type Candidate struct {
	Candidate        string  `json:"candidate"`
	SDPMid           *string `json:"sdpMid"`
	SDPMLineIndex    *uint16 `json:"sdpMLineIndex"`
	UsernameFragment *string `json:"usernameFragment"`
}

// ProtocolError is a message the server does not accept. Code goes to the client
// as the error code, Msg as the human message.
type ProtocolError struct {
	Code string
	Msg  string
	Ref  string // type of the offending message, when known
}

func (e *ProtocolError) Error() string { return e.Code + ": " + e.Msg }

func protoErr(code, ref, format string, args ...any) *ProtocolError {
	return &ProtocolError{Code: code, Ref: ref, Msg: fmt.Sprintf(format, args...)}
}

// Decode parses and validates one client frame.
func Decode(frame []byte) (*Message, *ProtocolError) {
	if len(frame) > MaxFrameSize {
		return nil, protoErr(CodeTooLarge, "", "frame of %d bytes is over the %d byte limit", len(frame), MaxFrameSize)
	}
	trimmed := bytes.TrimSpace(frame)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, protoErr(CodeBadMessage, "", "a message must be a JSON object with a \"type\"")
	}
	var m Message
	if err := json.Unmarshal(trimmed, &m); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) && typeErr.Field != "" {
			return nil, protoErr(CodeBadMessage, m.Type, "field %q must be a JSON %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
		}
		return nil, protoErr(CodeBadMessage, "", "invalid JSON: %v", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "ptr", "struct":
		return "object"
	default:
		return "number"
	}
}

func (m *Message) validate() *ProtocolError {
	missing := func(field string) *ProtocolError {
		return protoErr(CodeBadMessage, m.Type, "%s needs a non-empty %q", m.Type, field)
	}
	switch m.Type {
	case "":
		return protoErr(CodeBadMessage, "", "message has no \"type\"")
	case TypeJoin:
		if m.Room == "" {
			return missing("room")
		}
		if len(m.Room) > 128 {
			return protoErr(CodeRoomNotFound, m.Type, "no such room")
		}
		if !utf8.ValidString(m.Name) || utf8.RuneCountInString(m.Name) > MaxNameLength {
			return protoErr(CodeBadMessage, m.Type, "name must be at most %d characters", MaxNameLength)
		}
		if len(m.Password) > MaxPasswordLength {
			return protoErr(CodeBadPassword, m.Type, "wrong password for this room")
		}
	case TypeLeave:
	case TypeOffer, TypeAnswer:
		if m.To == "" {
			return missing("to")
		}
		if m.SDP == "" {
			return missing("sdp")
		}
		if len(m.SDP) > MaxSDPSize {
			return protoErr(CodeTooLarge, m.Type, "sdp of %d bytes is over the %d byte limit", len(m.SDP), MaxSDPSize)
		}
	case TypeCandidate:
		if m.To == "" {
			return missing("to")
		}
		if m.Candidate == nil {
			return missing("candidate")
		}
		if len(m.Candidate.Candidate) > maxCandidateSize {
			return protoErr(CodeTooLarge, m.Type, "candidate of %d bytes is over the %d byte limit", len(m.Candidate.Candidate), maxCandidateSize)
		}
		if m.Candidate.Candidate != "" && m.Candidate.SDPMid == nil && m.Candidate.SDPMLineIndex == nil {
			return protoErr(CodeBadMessage, m.Type, "candidate needs sdpMid or sdpMLineIndex")
		}
	case TypeMedia:
		if m.Audio == nil || m.Video == nil {
			return protoErr(CodeBadMessage, m.Type, "media needs boolean \"audio\" and \"video\"")
		}
	default:
		if len(m.Type) > 32 {
			return protoErr(CodeUnknownType, "", "unknown message type")
		}
		return protoErr(CodeUnknownType, m.Type, "unknown message type %q", m.Type)
	}
	return nil
}

// Outgoing messages. Each is marshalled once and the bytes queued to every
// recipient.

// PeerInfo names a participant.
type PeerInfo struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

type joinedMsg struct {
	Type       string      `json:"type"`
	Room       string      `json:"room"`
	Mode       string      `json:"mode"`
	ID         string      `json:"id"`
	Name       string      `json:"name"`
	Peers      []PeerInfo  `json:"peers"`
	ICEServers []ICEServer `json:"iceServers"`
}

type peerJoinedMsg struct {
	Type string   `json:"type"`
	Peer PeerInfo `json:"peer"`
}

type peerLeftMsg struct {
	Type   string `json:"type"`
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// relayMsg is an offer, answer, candidate or media message on its way to its
// recipient, stamped with the sender.
type relayMsg struct {
	Type      string     `json:"type"`
	From      string     `json:"from"`
	SDP       string     `json:"sdp,omitempty"`
	Candidate *Candidate `json:"candidate,omitempty"`
	Audio     *bool      `json:"audio,omitempty"`
	Video     *bool      `json:"video,omitempty"`
	Screen    *bool      `json:"screen,omitempty"`
}

type errorMsg struct {
	Type    string `json:"type"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Ref     string `json:"ref,omitempty"`
}

type byeMsg struct {
	Type   string `json:"type"`
	Reason string `json:"reason"`
}

// encode marshals an outgoing message. Every outgoing type marshals without
// error, so a failure is a programming error.
func encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("signaling: encode %T: %v", v, err))
	}
	return b
}
