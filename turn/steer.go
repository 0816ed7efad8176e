package turn

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The UDP sockets of the server form one SO_REUSEPORT group: the kernel
// sends each client (by its address) to one socket, and pion keeps one
// allocation manager per socket. That is fine for everything but
// RESERVATION-TOKEN (RFC 8656 §7.1, RTP/RTCP port pairs of non-WebRTC clients
// such as coturn's turnutils_uclient): the token lives in the manager of the
// socket that answered the EVEN-PORT request, while the second Allocate comes
// from another client port and may land on another socket, which does not
// know the token and answers 508.
//
// udpGroup fixes that below pion. It notes which socket sent each
// RESERVATION-TOKEN (in Allocate success responses going out), and when an
// Allocate that redeems a token arrives on another socket, it steers that
// client to the socket that holds the token: this packet and every later
// one, until the allocation is deleted. Other packets pay two byte compares
// and, while any client is steered, one map lookup.

// reservationLifetime is how long pion keeps a reservation.
const reservationLifetime = 30 * time.Second

// STUN wire constants.
const (
	stunHeaderSize     = 20
	stunMagicCookie    = 0x2112A442
	typeAllocate       = 0x0003 // Allocate request
	typeAllocateOK     = 0x0103 // Allocate success response
	attrReservationTok = 0x0022
)

// udpGroup is the steering state shared by the sockets of one group.
type udpGroup struct {
	conns []*groupConn // static after construction

	mu      sync.Mutex
	tokens  map[string]tokenOwner // reservation token → socket; guarded by mu
	steered sync.Map              // netip.AddrPort → *steer; written under mu
	count   atomic.Int32          // number of steered clients; lets most packets skip the lookup
}

type tokenOwner struct {
	idx int
	at  time.Time
}

// steer sends one client to the socket idx.
type steer struct {
	idx         int
	at          time.Time
	established atomic.Bool // its allocation was created
}

// newUDPGroups wraps the UDP sockets in one group per local address.
func newUDPGroups(pcs []net.PacketConn) []*udpGroup {
	var groups []*udpGroup
	var addrs []string
	byAddr := map[string][]net.PacketConn{}
	for _, pc := range pcs {
		a := pc.LocalAddr().String()
		if _, ok := byAddr[a]; !ok {
			addrs = append(addrs, a)
		}
		byAddr[a] = append(byAddr[a], pc)
	}
	for _, a := range addrs {
		groups = append(groups, newUDPGroup(byAddr[a]))
	}
	return groups
}

// newUDPGroup wraps the sockets of one SO_REUSEPORT group.
func newUDPGroup(pcs []net.PacketConn) *udpGroup {
	g := &udpGroup{tokens: make(map[string]tokenOwner)}
	for i, pc := range pcs {
		g.conns = append(g.conns, &groupConn{PacketConn: pc, g: g, idx: i})
	}
	return g
}

// packetConns returns the wrapped sockets for pion.
func (g *udpGroup) packetConns() []net.PacketConn {
	out := make([]net.PacketConn, len(g.conns))
	for i, c := range g.conns {
		out[i] = c
	}
	return out
}

// route returns the socket that must handle a packet read by socket idx, or
// nil if idx handles it.
func (g *udpGroup) route(idx int, pkt []byte, from net.Addr) *groupConn {
	if len(g.conns) < 2 {
		return nil
	}
	if tok, ok := stunAttr(pkt, typeAllocate, attrReservationTok); ok {
		return g.redeem(idx, string(tok), from)
	}
	if g.count.Load() == 0 {
		return nil
	}
	ap, ok := addrPort(from)
	if !ok {
		return nil
	}
	if s, ok := g.steered.Load(ap); ok && s.(*steer).idx != idx {
		return g.conns[s.(*steer).idx]
	}
	return nil
}

// redeem steers from to the socket that issued tok, if that is not idx.
func (g *udpGroup) redeem(idx int, tok string, from net.Addr) *groupConn {
	ap, ok := addrPort(from)
	if !ok {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if s, ok := g.steered.Load(ap); ok { // a retransmission
		if s.(*steer).idx == idx {
			return nil
		}
		return g.conns[s.(*steer).idx]
	}
	owner, ok := g.tokens[tok]
	if !ok || owner.idx == idx {
		return nil
	}
	now := time.Now()
	g.expire(now)
	g.steered.Store(ap, &steer{idx: owner.idx, at: now})
	g.count.Add(1)
	return g.conns[owner.idx]
}

// issued notes that socket idx sent a response carrying a reservation token.
func (g *udpGroup) issued(idx int, tok string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	g.expire(now)
	g.tokens[tok] = tokenOwner{idx: idx, at: now}
}

// created marks the allocation of a steered client as made.
func (g *udpGroup) created(client net.Addr) {
	if g.count.Load() == 0 {
		return
	}
	if ap, ok := addrPort(client); ok {
		if s, ok := g.steered.Load(ap); ok {
			s.(*steer).established.Store(true)
		}
	}
}

// deleted ends the steering of a client whose allocation was deleted.
func (g *udpGroup) deleted(client net.Addr) {
	if g.count.Load() == 0 {
		return
	}
	ap, ok := addrPort(client)
	if !ok {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.steered.LoadAndDelete(ap); ok {
		g.count.Add(-1)
	}
}

// expire drops old tokens and steers whose allocation never came. Called
// with mu held.
func (g *udpGroup) expire(now time.Time) {
	limit := now.Add(-reservationLifetime)
	for tok, o := range g.tokens {
		if o.at.Before(limit) {
			delete(g.tokens, tok)
		}
	}
	if g.count.Load() == 0 {
		return
	}
	g.steered.Range(func(k, v any) bool {
		if s := v.(*steer); !s.established.Load() && s.at.Before(limit) {
			g.steered.Delete(k)
			g.count.Add(-1)
		}
		return true
	})
}

// groupConn is one socket of the group as pion sees it. pion's read loop
// for the socket is the only caller of ReadFrom; WriteTo is called by that
// loop and by the relay goroutines of its allocations.
type groupConn struct {
	net.PacketConn
	g   *udpGroup
	idx int

	mu      sync.Mutex
	inbox   []steeredPacket // packets other sockets steered here; guarded by mu
	pending atomic.Int32    // len(inbox)
}

type steeredPacket struct {
	data []byte
	from net.Addr
}

// ReadFrom returns the next packet for this socket's allocation manager:
// one steered here by another socket, or one read from the socket that
// belongs here.
func (c *groupConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		if c.pending.Load() > 0 {
			if sp, ok := c.pop(); ok {
				return copy(p, sp.data), sp.from, nil
			}
		}
		n, from, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// A push woke us (nothing else sets deadlines on these
				// sockets). Reset before looking at the inbox: a push after
				// the reset wakes the next read, one before it is in the
				// inbox already.
				if err := c.PacketConn.SetReadDeadline(time.Time{}); err != nil {
					return 0, nil, err
				}
				continue
			}
			return n, from, err
		}
		if to := c.g.route(c.idx, p[:n], from); to != nil {
			to.push(steeredPacket{data: append([]byte(nil), p[:n]...), from: from})
			continue
		}
		return n, from, nil
	}
}

// WriteTo sends a packet, noting reservation tokens the socket hands out.
func (c *groupConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if len(c.g.conns) > 1 {
		if tok, ok := stunAttr(p, typeAllocateOK, attrReservationTok); ok {
			c.g.issued(c.idx, string(tok))
		}
	}
	return c.PacketConn.WriteTo(p, addr)
}

// push queues a packet for this socket and wakes its reader.
func (c *groupConn) push(sp steeredPacket) {
	c.mu.Lock()
	c.inbox = append(c.inbox, sp)
	c.pending.Add(1)
	c.mu.Unlock()
	c.PacketConn.SetReadDeadline(time.Unix(1, 0)) // fails only when closed
}

func (c *groupConn) pop() (steeredPacket, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.inbox) == 0 {
		return steeredPacket{}, false
	}
	sp := c.inbox[0]
	c.inbox[0] = steeredPacket{}
	c.inbox = c.inbox[1:]
	c.pending.Add(-1)
	return sp, true
}

// stunAttr returns the value of attribute attr in pkt if pkt is a STUN
// message of type typ. It reads only as far as the message's own length.
func stunAttr(pkt []byte, typ, attr uint16) ([]byte, bool) {
	if len(pkt) < stunHeaderSize || binary.BigEndian.Uint16(pkt) != typ ||
		binary.BigEndian.Uint32(pkt[4:]) != stunMagicCookie {
		return nil, false
	}
	end := stunHeaderSize + int(binary.BigEndian.Uint16(pkt[2:]))
	if end > len(pkt) {
		return nil, false
	}
	for off := stunHeaderSize; off+4 <= end; {
		t := binary.BigEndian.Uint16(pkt[off:])
		l := int(binary.BigEndian.Uint16(pkt[off+2:]))
		if off+4+l > end {
			return nil, false
		}
		if t == attr {
			return pkt[off+4 : off+4+l], true
		}
		off += 4 + (l+3)&^3
	}
	return nil, false
}

// addrPort returns a UDP address as a map key.
func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ua.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
