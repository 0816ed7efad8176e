package turn

import (
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pionturn "github.com/pion/turn/v5"
)

var (
	errNoRelayFamily    = errors.New("no relay address for this address family")
	errTCPRelayDisabled = errors.New("TCP relay allocations (RFC 6062) are disabled")
	errPortOutOfRange   = errors.New("requested relay port is outside turn.relay_ports")
	errNoFreeRelayPort  = errors.New("no free relay port")
	errPeerDenied       = errors.New("peer refused by relay policy")
	errAllocatorClosed  = errors.New("relay allocator closed")
)

// maxFailedBinds bounds how many ports held by other programs one allocation
// tries before giving up; ports held by our own allocations are skipped
// without a system call.
const maxFailedBinds = 100

// relayFamily is where the relay sockets of one address family live.
type relayFamily struct {
	public netip.Addr // told to clients in XOR-RELAYED-ADDRESS
	bind   netip.Addr // local address the sockets bind to
}

// portKey names a relay port of one family.
type portKey struct {
	v6   bool
	port uint16
}

// relayAllocator is the pion RelayAddressGenerator of the server: it binds
// relay sockets in turn.relay_ports, wraps them to count traffic and apply
// the per-packet policy, and keeps them so that Close can end them.
//
// Only UDP relays are offered. WebRTC never asks for TCP relays (RFC 6062),
// and they would let clients open TCP connections from the server to any
// host.
type relayAllocator struct {
	// Static after construction.
	v4, v6   relayFamily
	min, max uint16
	policy   *peerPolicy
	plane    *dataPlane // nil: pion relays everything; set before the first allocation

	mu     sync.Mutex
	closed bool                   // guarded by mu
	live   map[portKey]*relayConn // guarded by mu
	done   relayCounts            // totals of closed conns; guarded by mu
}

// relayCounts are traffic totals of relay sockets.
type relayCounts struct {
	packetsToPeers, bytesToPeers     uint64
	packetsFromPeers, bytesFromPeers uint64
	packetsDenied                    uint64
}

func newRelayAllocator(v4, v6 relayFamily, min, max uint16, policy *peerPolicy) *relayAllocator {
	return &relayAllocator{v4: v4, v6: v6, min: min, max: max, policy: policy, live: make(map[portKey]*relayConn)}
}

// Validate implements pionturn.RelayAddressGenerator.
func (a *relayAllocator) Validate() error {
	if !a.v4.public.IsValid() && !a.v6.public.IsValid() {
		return errNoRelayFamily
	}
	return nil
}

// AllocatePacketConn implements pionturn.RelayAddressGenerator.
func (a *relayAllocator) AllocatePacketConn(conf pionturn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	fam, v6 := a.v4, false
	if conf.Network == "udp6" {
		fam, v6 = a.v6, true
	}
	if !fam.public.IsValid() {
		return nil, nil, errNoRelayFamily
	}
	if conf.RequestedPort != 0 { // EVEN-PORT or RESERVATION-TOKEN
		if conf.RequestedPort < int(a.min) || conf.RequestedPort > int(a.max) {
			return nil, nil, errPortOutOfRange
		}
		return a.bind(fam, portKey{v6, uint16(conf.RequestedPort)})
	}

	n := int(a.max) - int(a.min) + 1
	start := rand.IntN(n)
	failed := 0
	for i := range n {
		k := portKey{v6, uint16(int(a.min) + (start+i)%n)}
		if a.inUse(k) {
			continue
		}
		c, addr, err := a.bind(fam, k)
		if err == nil || errors.Is(err, errAllocatorClosed) {
			return c, addr, err
		}
		if failed++; failed >= maxFailedBinds {
			break
		}
	}
	return nil, nil, errNoFreeRelayPort
}

// AllocateListener implements pionturn.RelayAddressGenerator; TCP relays are
// refused.
func (a *relayAllocator) AllocateListener(pionturn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errTCPRelayDisabled
}

// AllocateConn implements pionturn.RelayAddressGenerator; TCP relays are
// refused.
func (a *relayAllocator) AllocateConn(pionturn.AllocateConnConfig) (net.Conn, error) {
	return nil, errTCPRelayDisabled
}

func (a *relayAllocator) inUse(k portKey) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.live[k]
	return ok
}

func (a *relayAllocator) bind(fam relayFamily, k portKey) (net.PacketConn, net.Addr, error) {
	network := "udp4"
	if k.v6 {
		network = "udp6"
	}
	addr := netip.AddrPortFrom(fam.bind, k.port)
	var c *relayConn
	if a.plane != nil {
		s, err := newUDPSock(addr, nil)
		if err != nil {
			return nil, nil, err
		}
		c = &relayConn{conn: s, a: a, key: k}
		if err := a.plane.add(s, relaySock, c, netip.AddrPortFrom(fam.public, k.port)); err != nil {
			s.Close()
			return nil, nil, err
		}
	} else {
		uc, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(addr))
		if err != nil {
			return nil, nil, err
		}
		c = &relayConn{conn: uc, a: a, key: k, counts: true}
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		c.conn.Close()
		return nil, nil, errAllocatorClosed
	}
	a.live[k] = c
	a.mu.Unlock()

	return c, net.UDPAddrFromAddrPort(netip.AddrPortFrom(fam.public, k.port)), nil
}

// planeSock returns the data plane socket of the relay at the public
// address relay, or nil.
func (a *relayAllocator) planeSock(relay net.Addr) *udpSock {
	ua, ok := relay.(*net.UDPAddr)
	if !ok {
		return nil
	}
	ap := ua.AddrPort()
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.live[portKey{v6: !ap.Addr().Unmap().Is4(), port: ap.Port()}]
	if c == nil {
		return nil
	}
	s, _ := c.conn.(*udpSock)
	return s
}

// release forgets a closed conn and keeps its counts.
func (a *relayAllocator) release(c *relayConn) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.live[c.key] == c {
		delete(a.live, c.key)
	}
	c.addTo(&a.done)
}

// counts returns the traffic totals of all relay sockets, open and closed.
func (a *relayAllocator) counts() relayCounts {
	a.mu.Lock()
	defer a.mu.Unlock()
	sum := a.done
	for _, c := range a.live {
		c.addTo(&sum)
	}
	return sum
}

// closeAll closes every relay socket; later allocations fail. Each socket's
// relay goroutine in pion then ends and deletes its allocation.
func (a *relayAllocator) closeAll() {
	a.mu.Lock()
	a.closed = true
	conns := make([]*relayConn, 0, len(a.live))
	for _, c := range a.live {
		conns = append(conns, c)
	}
	a.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// relayConn is one relay socket. pion's relay goroutine for the allocation
// calls ReadFrom; the goroutine reading the client's socket calls WriteTo.
// With the data plane, those see only what it leaves to pion, and the data
// plane counts what it relays itself.
type relayConn struct {
	// Static after construction.
	conn   net.PacketConn // *net.UDPConn, or *udpSock with the data plane
	a      *relayAllocator
	key    portKey
	counts bool // ReadFrom counts packets from peers (no data plane)

	// Counters; atomic because Stats reads them while the relay runs. Each
	// is written by one goroutine, so they do not bounce between cores.
	packetsFromPeers, bytesFromPeers atomic.Uint64 // written by ReadFrom
	packetsToPeers, bytesToPeers     atomic.Uint64 // written by WriteTo
	packetsDenied                    atomic.Uint64 // written by WriteTo

	closeOnce sync.Once
}

// ReadFrom reads a packet from a peer. It counts every packet received,
// including those pion then drops because the peer has no permission.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, addr, err := c.conn.ReadFrom(p)
	if err == nil && c.counts {
		c.packetsFromPeers.Add(1)
		c.bytesFromPeers.Add(uint64(n))
	}
	return n, addr, err
}

// WriteTo sends a client's packet to a peer if the per-packet policy allows.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if ua, ok := addr.(*net.UDPAddr); ok && !c.a.policy.permitPacket(ua.AddrPort()) {
		c.packetsDenied.Add(1)
		return 0, errPeerDenied
	}
	n, err := c.conn.WriteTo(p, addr)
	if err == nil {
		c.packetsToPeers.Add(1)
		c.bytesToPeers.Add(uint64(n))
	}
	return n, err
}

// Close closes the socket once; later calls return nil, because pion stops
// closing its other allocations at the first error.
func (c *relayConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		err = c.conn.Close()
		c.a.release(c)
	})
	return err
}

func (c *relayConn) LocalAddr() net.Addr                { return c.conn.LocalAddr() }
func (c *relayConn) SetDeadline(t time.Time) error      { return c.conn.SetDeadline(t) }
func (c *relayConn) SetReadDeadline(t time.Time) error  { return c.conn.SetReadDeadline(t) }
func (c *relayConn) SetWriteDeadline(t time.Time) error { return c.conn.SetWriteDeadline(t) }

func (c *relayConn) addTo(s *relayCounts) {
	s.packetsToPeers += c.packetsToPeers.Load()
	s.bytesToPeers += c.bytesToPeers.Load()
	s.packetsFromPeers += c.packetsFromPeers.Load()
	s.bytesFromPeers += c.bytesFromPeers.Load()
	s.packetsDenied += c.packetsDenied.Load()
}
