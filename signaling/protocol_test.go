package signaling_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-chat/parley/signaling"
)

func ptr[T any](v T) *T { return &v }

// validFrames are accepted by Decode, with the Message each must decode to.
var validFrames = []struct {
	name  string
	frame string
	want  signaling.Message
}{
	{"join", `{"type":"join","room":"r1"}`, signaling.Message{Type: "join", Room: "r1"}},
	{"join with name", `{"type":"join","room":"r1","name":"Ada"}`, signaling.Message{Type: "join", Room: "r1", Name: "Ada"}},
	{"join name of 64 multibyte characters", `{"type":"join","room":"r1","name":"` + strings.Repeat("é", signaling.MaxNameLength) + `"}`,
		signaling.Message{Type: "join", Room: "r1", Name: strings.Repeat("é", signaling.MaxNameLength)}},
	{"join room of 128 bytes", `{"type":"join","room":"` + strings.Repeat("r", 128) + `"}`, signaling.Message{Type: "join", Room: strings.Repeat("r", 128)}},
	{"leave", `{"type":"leave"}`, signaling.Message{Type: "leave"}},
	{"offer", `{"type":"offer","to":"p1","sdp":"v=0\r\n"}`, signaling.Message{Type: "offer", To: "p1", SDP: "v=0\r\n"}},
	{"answer", `{"type":"answer","to":"p1","sdp":"v=0\r\n"}`, signaling.Message{Type: "answer", To: "p1", SDP: "v=0\r\n"}},
	{"offer with sdp at the limit", `{"type":"offer","to":"p1","sdp":"` + strings.Repeat("a", signaling.MaxSDPSize) + `"}`,
		signaling.Message{Type: "offer", To: "p1", SDP: strings.Repeat("a", signaling.MaxSDPSize)}},
	{"candidate", `{"type":"candidate","to":"p1","candidate":{"candidate":"candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"uf"}}`,
		signaling.Message{Type: "candidate", To: "p1", Candidate: &signaling.Candidate{
			Candidate: "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host", SDPMid: ptr("0"), SDPMLineIndex: ptr[uint16](0), UsernameFragment: ptr("uf")}}},
	{"candidate with sdpMid only", `{"type":"candidate","to":"p1","candidate":{"candidate":"c","sdpMid":"audio","sdpMLineIndex":null}}`,
		signaling.Message{Type: "candidate", To: "p1", Candidate: &signaling.Candidate{Candidate: "c", SDPMid: ptr("audio")}}},
	{"candidate with sdpMLineIndex only", `{"type":"candidate","to":"p1","candidate":{"candidate":"c","sdpMLineIndex":2}}`,
		signaling.Message{Type: "candidate", To: "p1", Candidate: &signaling.Candidate{Candidate: "c", SDPMLineIndex: ptr[uint16](2)}}},
	{"end of candidates", `{"type":"candidate","to":"p1","candidate":{"candidate":""}}`,
		signaling.Message{Type: "candidate", To: "p1", Candidate: &signaling.Candidate{}}},
	{"media", `{"type":"media","audio":true,"video":false}`, signaling.Message{Type: "media", Audio: ptr(true), Video: ptr(false)}},
	{"media with screen", `{"type":"media","audio":false,"video":true,"screen":true}`,
		signaling.Message{Type: "media", Audio: ptr(false), Video: ptr(true), Screen: ptr(true)}},
	{"unknown fields are ignored", `{"type":"leave","future":{"x":[1,2]},"v":2}`, signaling.Message{Type: "leave"}},
	{"whitespace around the object", " \n\t{\"type\":\"leave\"}\r\n ", signaling.Message{Type: "leave"}},
}

// invalidFrames are refused by Decode with the given code and ref.
var invalidFrames = []struct {
	name, frame, code, ref string
}{
	{"empty", ``, signaling.CodeBadMessage, ""},
	{"only whitespace", "  \n", signaling.CodeBadMessage, ""},
	{"not JSON", `hello`, signaling.CodeBadMessage, ""},
	{"truncated object", `{"type":"join","room":"r1"`, signaling.CodeBadMessage, ""},
	{"broken object", `{"type":}`, signaling.CodeBadMessage, ""},
	{"trailing data", `{"type":"leave"} {"type":"leave"}`, signaling.CodeBadMessage, ""},
	{"array", `[{"type":"leave"}]`, signaling.CodeBadMessage, ""},
	{"string", `"join"`, signaling.CodeBadMessage, ""},
	{"number", `42`, signaling.CodeBadMessage, ""},
	{"null", `null`, signaling.CodeBadMessage, ""},
	{"no type", `{"room":"r1"}`, signaling.CodeBadMessage, ""},
	{"empty type", `{"type":""}`, signaling.CodeBadMessage, ""},
	{"null type", `{"type":null}`, signaling.CodeBadMessage, ""},
	{"numeric type", `{"type":5}`, signaling.CodeBadMessage, ""},
	{"unknown type", `{"type":"hello"}`, signaling.CodeUnknownType, "hello"},
	{"server-only type", `{"type":"joined"}`, signaling.CodeUnknownType, "joined"},
	{"long unknown type is not echoed", `{"type":"` + strings.Repeat("x", 33) + `"}`, signaling.CodeUnknownType, ""},
	{"numeric to", `{"type":"offer","to":5,"sdp":"v=0"}`, signaling.CodeBadMessage, "offer"},
	{"numeric to before type", `{"to":5,"type":"answer","sdp":"v=0"}`, signaling.CodeBadMessage, "answer"},
	{"boolean sdp", `{"type":"offer","to":"p1","sdp":true}`, signaling.CodeBadMessage, "offer"},
	{"array room", `{"type":"join","room":["r1"]}`, signaling.CodeBadMessage, "join"},
	{"numeric name", `{"type":"join","room":"r1","name":1}`, signaling.CodeBadMessage, "join"},
	{"string candidate", `{"type":"candidate","to":"p1","candidate":"candidate:1"}`, signaling.CodeBadMessage, "candidate"},
	{"numeric sdpMid", `{"type":"candidate","to":"p1","candidate":{"candidate":"c","sdpMid":0}}`, signaling.CodeBadMessage, "candidate"},
	{"string sdpMLineIndex", `{"type":"candidate","to":"p1","candidate":{"candidate":"c","sdpMLineIndex":"0"}}`, signaling.CodeBadMessage, "candidate"},
	{"negative sdpMLineIndex", `{"type":"candidate","to":"p1","candidate":{"candidate":"c","sdpMLineIndex":-1}}`, signaling.CodeBadMessage, "candidate"},
	{"string audio", `{"type":"media","audio":"yes","video":true}`, signaling.CodeBadMessage, "media"},
	{"join without room", `{"type":"join","name":"Ada"}`, signaling.CodeBadMessage, "join"},
	{"join with empty room", `{"type":"join","room":""}`, signaling.CodeBadMessage, "join"},
	{"join with a room id no server makes", `{"type":"join","room":"` + strings.Repeat("r", 129) + `"}`, signaling.CodeRoomNotFound, "join"},
	{"name over 64 characters", `{"type":"join","room":"r1","name":"` + strings.Repeat("é", signaling.MaxNameLength+1) + `"}`, signaling.CodeBadMessage, "join"},
	{"offer without to", `{"type":"offer","sdp":"v=0"}`, signaling.CodeBadMessage, "offer"},
	{"offer without sdp", `{"type":"offer","to":"p1"}`, signaling.CodeBadMessage, "offer"},
	{"answer without to", `{"type":"answer","sdp":"v=0"}`, signaling.CodeBadMessage, "answer"},
	{"answer with empty sdp", `{"type":"answer","to":"p1","sdp":""}`, signaling.CodeBadMessage, "answer"},
	{"candidate without to", `{"type":"candidate","candidate":{"candidate":"c","sdpMid":"0"}}`, signaling.CodeBadMessage, "candidate"},
	{"candidate without candidate", `{"type":"candidate","to":"p1"}`, signaling.CodeBadMessage, "candidate"},
	{"null candidate", `{"type":"candidate","to":"p1","candidate":null}`, signaling.CodeBadMessage, "candidate"},
	{"candidate without sdpMid and sdpMLineIndex", `{"type":"candidate","to":"p1","candidate":{"candidate":"c"}}`, signaling.CodeBadMessage, "candidate"},
	{"candidate with both null", `{"type":"candidate","to":"p1","candidate":{"candidate":"c","sdpMid":null,"sdpMLineIndex":null}}`, signaling.CodeBadMessage, "candidate"},
	{"oversized candidate", `{"type":"candidate","to":"p1","candidate":{"candidate":"` + strings.Repeat("c", 1025) + `","sdpMid":"0"}}`, signaling.CodeTooLarge, "candidate"},
	{"media without audio", `{"type":"media","video":true}`, signaling.CodeBadMessage, "media"},
	{"media without video", `{"type":"media","audio":true}`, signaling.CodeBadMessage, "media"},
	{"media with null video", `{"type":"media","audio":true,"video":null}`, signaling.CodeBadMessage, "media"},
	{"media with only screen", `{"type":"media","screen":true}`, signaling.CodeBadMessage, "media"},
	{"oversized offer sdp", `{"type":"offer","to":"p1","sdp":"` + strings.Repeat("a", signaling.MaxSDPSize+1) + `"}`, signaling.CodeTooLarge, "offer"},
	{"oversized answer sdp", `{"type":"answer","to":"p1","sdp":"` + strings.Repeat("a", signaling.MaxSDPSize+1) + `"}`, signaling.CodeTooLarge, "answer"},
	{"frame over the limit", `{"type":"leave","pad":"` + strings.Repeat(" ", signaling.MaxFrameSize) + `"}`, signaling.CodeTooLarge, ""},
}

func TestDecodeValid(t *testing.T) {
	for _, tc := range validFrames {
		t.Run(tc.name, func(t *testing.T) {
			m, perr := signaling.Decode([]byte(tc.frame))
			if perr != nil {
				t.Fatalf("Decode(%.80q) = error %v, want a message", tc.frame, perr)
			}
			if !reflect.DeepEqual(*m, tc.want) {
				t.Errorf("Decode(%.80q) =\n  %+v\nwant\n  %+v", tc.frame, *m, tc.want)
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	for _, tc := range invalidFrames {
		t.Run(tc.name, func(t *testing.T) {
			m, perr := signaling.Decode([]byte(tc.frame))
			if perr == nil {
				t.Fatalf("Decode(%.80q) = %+v, want error %s", tc.frame, *m, tc.code)
			}
			if m != nil {
				t.Errorf("Decode(%.80q) returned a message with its error", tc.frame)
			}
			if perr.Code != tc.code || perr.Ref != tc.ref {
				t.Errorf("Decode(%.80q) = code %q ref %q (%s), want code %q ref %q", tc.frame, perr.Code, perr.Ref, perr.Msg, tc.code, tc.ref)
			}
			if perr.Msg == "" {
				t.Errorf("Decode(%.80q): error %s has no message for people", tc.frame, perr.Code)
			}
			if len(perr.Msg) > 200 {
				t.Errorf("Decode(%.80q): error message of %d bytes echoes too much input", tc.frame, len(perr.Msg))
			}
			if got, want := perr.Error(), perr.Code+": "+perr.Msg; got != want {
				t.Errorf("Error() = %q, want %q", got, want)
			}
		})
	}
}

// FuzzDecode checks that Decode never panics, refuses only with a documented
// code, and that whatever it accepts survives a JSON round trip unchanged.
func FuzzDecode(f *testing.F) {
	for _, tc := range validFrames {
		f.Add([]byte(tc.frame))
	}
	for _, tc := range invalidFrames {
		f.Add([]byte(tc.frame))
	}
	codes := map[string]bool{
		signaling.CodeBadMessage: true, signaling.CodeUnknownType: true,
		signaling.CodeTooLarge: true, signaling.CodeRoomNotFound: true,
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, perr := signaling.Decode(frame)
		if perr != nil {
			if m != nil {
				t.Fatalf("Decode returned both a message and %v", perr)
			}
			if !codes[perr.Code] {
				t.Fatalf("Decode refused with code %q, which Decode must not produce", perr.Code)
			}
			if perr.Msg == "" {
				t.Fatalf("error %s without a message", perr.Code)
			}
			return
		}
		if m == nil {
			t.Fatal("Decode returned neither a message nor an error")
		}
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("accepted message %+v does not re-encode: %v", *m, err)
		}
		if len(b) > signaling.MaxFrameSize {
			// JSON escaping (U+2028, control characters) can grow an accepted
			// frame past the frame limit; the content must still round-trip.
			var again signaling.Message
			if err := json.Unmarshal(b, &again); err != nil {
				t.Fatalf("re-encoded message does not decode: %v", err)
			}
			if !reflect.DeepEqual(*m, again) {
				t.Fatalf("round trip changed the message:\n  %+v\n  %+v", *m, again)
			}
			return
		}
		again, perr := signaling.Decode(b)
		if perr != nil {
			t.Fatalf("re-encoded message %s is refused: %v", b, perr)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("round trip changed the message:\n  %+v\n  %+v", *m, *again)
		}
	})
}
