package turn

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// TestReservationAcrossSockets: an Allocate that redeems a RESERVATION-TOKEN
// works whichever UDP socket of the group it lands on, and the client's
// later requests reach its allocation.
func TestReservationAcrossSockets(t *testing.T) {
	ts := startServerSockets(t, 4, false, allowLoopbackPeers)
	steered := false
	for i := range 8 {
		rtp := ts.rawClient(t, "rtp")
		res := rtp.allocate(rawAttr{stun.AttrEvenPort, []byte{0x80}}) // R: reserve the next port
		tok, err := res.Get(stun.AttrReservationToken)
		if err != nil {
			t.Fatalf("no RESERVATION-TOKEN: %v", res)
		}
		var relay stun.XORMappedAddress
		if err := relay.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil || relay.Port%2 != 0 {
			t.Fatalf("relayed address %v (%v), want an even port", relay, err)
		}

		rtcp := ts.rawClient(t, "rtcp")
		res = rtcp.allocate(rawAttr{stun.AttrReservationToken, tok})
		var relay2 stun.XORMappedAddress
		if err := relay2.GetFromAs(res, stun.AttrXORRelayedAddress); err != nil || relay2.Port != relay.Port+1 {
			t.Fatalf("round %d: reserved relay %v (%v), want port %d", i, relay2, err, relay.Port+1)
		}
		steered = steered || ts.udp[0].count.Load() > 0

		// Later requests of the steered client find its allocation.
		peer := rawPeerAddr{ip: netip.MustParseAddr("127.0.0.1"), port: 9}
		if code := errorCode(rtcp.request(stun.MethodCreatePermission, peer)); code != 0 {
			t.Fatalf("CreatePermission of the second allocation: code %d", code)
		}
		for _, c := range []*rawClient{rtp, rtcp} {
			if code := errorCode(c.request(stun.MethodRefresh, rawAttr{stun.AttrLifetime, []byte{0, 0, 0, 0}})); code != 0 {
				t.Fatalf("Refresh 0: code %d", code)
			}
		}
	}
	if !steered {
		t.Log("no round crossed sockets (unlikely: 4^-8)")
	}
	eventually(t, "steering to end with the allocations", func() bool {
		return ts.udp[0].count.Load() == 0 && ts.Stats().Allocations == 0
	})
}

func TestStunAttr(t *testing.T) {
	msg, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
		stun.NewSoftware("x"), rawAttr{stun.AttrReservationToken, []byte("12345678")}, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := stunAttr(msg.Raw, typeAllocateOK, attrReservationTok); !ok || string(v) != "12345678" {
		t.Errorf("stunAttr = %q, %v", v, ok)
	}
	if _, ok := stunAttr(msg.Raw, typeAllocate, attrReservationTok); ok {
		t.Error("found in a message of another type")
	}
	if _, ok := stunAttr(msg.Raw[:len(msg.Raw)-9], typeAllocateOK, attrReservationTok); ok {
		t.Error("found in a truncated message")
	}
	bad := bytes.Clone(msg.Raw)
	binary.BigEndian.PutUint32(bad[4:], 0)
	if _, ok := stunAttr(bad, typeAllocateOK, attrReservationTok); ok {
		t.Error("found without the magic cookie")
	}
	bad = bytes.Clone(msg.Raw)
	binary.BigEndian.PutUint16(bad[22:], 0xFFFF) // the first attribute claims to run past the end
	if _, ok := stunAttr(bad, typeAllocateOK, attrReservationTok); ok {
		t.Error("found after an overlong attribute")
	}
	if _, ok := stunAttr([]byte{0x40, 0, 0, 4, 1, 2, 3, 4}, typeAllocate, attrReservationTok); ok {
		t.Error("found in ChannelData")
	}
}

// FuzzStunAttr: the scan of packets from the network never panics, stays
// inside the packet, and agrees with the stun package where that decodes.
func FuzzStunAttr(f *testing.F) {
	msg, _ := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		rawAttr{stun.AttrReservationToken, []byte("abcdefgh")}, stun.Fingerprint)
	f.Add(msg.Raw)
	f.Add([]byte{0, 3, 0, 4, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0x22, 0, 9})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		v, ok := stunAttr(pkt, typeAllocate, attrReservationTok)
		if !ok {
			return
		}
		if len(v) > len(pkt) {
			t.Fatalf("value of %d bytes from a packet of %d", len(v), len(pkt))
		}
		m := &stun.Message{Raw: bytes.Clone(pkt)}
		if m.Decode() != nil || m.Type != stun.NewType(stun.MethodAllocate, stun.ClassRequest) {
			return
		}
		if want, err := m.Get(stun.AttrReservationToken); err == nil && !bytes.Equal(v, want) {
			t.Fatalf("stunAttr = %x, stun package %x", v, want)
		}
	})
}
