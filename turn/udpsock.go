package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpSock is a UDP socket outside Go's network poller: the data plane's
// threads read it (see dataPlane). What they do not relay themselves they
// hand up, and ReadFrom returns it, so pion reads these sockets as any
// net.PacketConn; WriteTo sends at once and never waits (a full socket
// buffer drops the packet, as the network would).
type udpSock struct {
	// Static after construction.
	local netip.AddrPort
	v6    bool // an AF_INET6 socket
	in    chan handedUp
	done  chan struct{} // closed by Close

	dropped atomic.Uint64 // packets not handed up: the queue was full

	// mu is held for reading around every use of fd and for writing by
	// Close, so that no thread uses the descriptor once it is closed (and
	// perhaps reused by another socket).
	mu     sync.RWMutex
	fd     int  // guarded by mu
	closed bool // guarded by mu

	// Set by the data plane when it takes the socket, then static.
	plane  *dataPlane
	worker *dpWorker
	id     int32
	role   sockRole
	relay  *relayConn     // the relay socket's conn, for role relaySock
	public netip.AddrPort // the relay socket's address as clients know it

	// routes is what a relay socket's peers' packets become: peer (unmapped)
	// → the channel to the client. Copy on write under plane.mu.
	routes atomic.Pointer[map[netip.AddrPort]*peerRoute]

	readDeadline atomic.Int64 // unix ns; 0 for none
	deadlineSet  chan struct{}
	closeOnce    sync.Once
}

// handedUp is a packet the data plane left to pion.
type handedUp struct {
	data []byte
	from netip.AddrPort
}

type sockRole uint8

const (
	listenSock sockRole = iota + 1
	relaySock
)

// handUpQueue bounds the packets handed up to pion and not yet read: STUN
// requests, and channel data that has no route.
const handUpQueue = 512

// newUDPSock opens a non-blocking UDP socket bound to addr, with the options
// control sets before the bind (nil for none).
func newUDPSock(addr netip.AddrPort, control func(fd int) error) (*udpSock, error) {
	family, v6 := unix.AF_INET, false
	if !addr.Addr().Unmap().Is4() {
		family, v6 = unix.AF_INET6, true
	} else {
		addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if v6 {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
			unix.Close(fd)
			return nil, os.NewSyscallError("setsockopt", err)
		}
	}
	if control != nil {
		if err := control(fd); err != nil {
			unix.Close(fd)
			return nil, err
		}
	}
	if err := unix.Bind(fd, sockaddrOf(addr)); err != nil {
		unix.Close(fd)
		return nil, &net.OpError{Op: "listen", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: os.NewSyscallError("bind", err)}
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("getsockname", err)
	}
	local, _ := addrPortOf(sa)
	return &udpSock{
		fd: fd, local: local, v6: v6,
		in: make(chan handedUp, handUpQueue), done: make(chan struct{}), deadlineSet: make(chan struct{}, 1),
	}, nil
}

// handUp queues a copy of a packet for ReadFrom; a full queue drops it.
func (s *udpSock) handUp(data []byte, from netip.AddrPort) {
	select {
	case s.in <- handedUp{data: append([]byte(nil), data...), from: from}:
	default:
		s.dropped.Add(1)
	}
}

// ReadFrom returns the next packet the data plane handed up.
func (s *udpSock) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		var timeout <-chan time.Time
		var timer *time.Timer
		if d := s.readDeadline.Load(); d != 0 {
			wait := time.Until(time.Unix(0, d))
			if wait <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(wait)
			timeout = timer.C
		}
		select {
		case pkt := <-s.in:
			stop(timer)
			return copy(p, pkt.data), net.UDPAddrFromAddrPort(pkt.from), nil
		case <-s.done:
			stop(timer)
			return 0, nil, net.ErrClosed
		case <-timeout:
			return 0, nil, os.ErrDeadlineExceeded
		case <-s.deadlineSet: // look at the new deadline
			stop(timer)
		}
	}
}

func stop(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}

// WriteTo sends p to addr without waiting.
func (s *udpSock) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.InvalidAddrError("not a UDP address")}
	}
	to := newRawAddr(ua.AddrPort(), s.v6)
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, net.ErrClosed
	}
	if err := sendto(s.fd, p, &to); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: os.NewSyscallError("sendto", err)}
	}
	return len(p), nil
}

// Close takes the socket out of the data plane and closes it.
func (s *udpSock) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.mu.Lock()
		if s.plane != nil {
			s.plane.remove(s)
		}
		s.closed = true
		err = unix.Close(s.fd)
		s.mu.Unlock()
		close(s.done)
	})
	return err
}

func (s *udpSock) LocalAddr() net.Addr { return net.UDPAddrFromAddrPort(s.local) }

func (s *udpSock) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

func (s *udpSock) SetReadDeadline(t time.Time) error {
	var ns int64
	if !t.IsZero() {
		ns = t.UnixNano()
	}
	s.readDeadline.Store(ns)
	select {
	case s.deadlineSet <- struct{}{}:
	default:
	}
	return nil
}

// SetWriteDeadline does nothing: writes never wait.
func (s *udpSock) SetWriteDeadline(time.Time) error { return nil }

// rawAddr is a socket address ready for sendto and sendmmsg.
type rawAddr struct {
	sa  [unix.SizeofSockaddrInet6]byte // RawSockaddrInet4 or RawSockaddrInet6
	len uint32
}

func newRawAddr(ap netip.AddrPort, v6 bool) rawAddr {
	var r rawAddr
	ip := ap.Addr().Unmap()
	if v6 {
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&r.sa))
		sa.Family = unix.AF_INET6
		sa.Port = htons(ap.Port())
		sa.Addr = ip.As16()
		r.len = unix.SizeofSockaddrInet6
		return r
	}
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&r.sa))
	sa.Family = unix.AF_INET
	sa.Port = htons(ap.Port())
	sa.Addr = ip.As4()
	r.len = unix.SizeofSockaddrInet4
	return r
}

// addrFromRaw reads the address recvmmsg wrote.
func addrFromRaw(sa *unix.RawSockaddrInet6) (netip.AddrPort, bool) {
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), htons(sa4.Port)), true
	case unix.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).Unmap(), htons(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// htons converts a port between host and network byte order (either way).
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func sockaddrOf(ap netip.AddrPort) unix.Sockaddr {
	if ip := ap.Addr(); ip.Is4() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ip.As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

func addrPortOf(sa unix.Sockaddr) (netip.AddrPort, bool) {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port)), true
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), uint16(sa.Port)), true
	}
	return netip.AddrPort{}, false
}

// sendto sends one datagram without waiting; the caller holds the socket's
// read lock. A raw system call: it never blocks, so the runtime need not
// know.
func sendto(fd int, p []byte, to *rawAddr) error {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	_, _, errno := unix.RawSyscall6(unix.SYS_SENDTO, uintptr(fd), uintptr(ptr), uintptr(len(p)),
		unix.MSG_DONTWAIT, uintptr(unsafe.Pointer(&to.sa)), uintptr(to.len))
	if errno != 0 {
		return errno
	}
	return nil
}
