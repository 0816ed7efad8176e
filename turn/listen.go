package turn

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/parley-chat/parley/config"
)

// Listeners are the sockets of a TURN server. Listen opens them and the
// caller owns them until it hands them to New, which takes them over.
type Listeners struct {
	// UDP are sockets bound with SO_REUSEPORT, one per usable CPU for each
	// address listened on: the kernel spreads clients over the group of an
	// address by their address, so every core reads packets.
	UDP []net.PacketConn
	// TCP carries STUN/TURN over TCP, on the port of the UDP sockets.
	TCP net.Listener
	// TLS is a plain TCP listener that New wraps in TLS with
	// Options.TLSConfig; nil when TURN over TLS is off.
	TLS net.Listener
	// SharedTLS hands over TURN-over-TLS connections whose handshake is
	// already done, from a port shared with HTTPS (cmd/parley tells the two
	// apart after the handshake). Listen does not open it; the caller sets
	// it, or leaves it nil. Its port gets a turns: URL of its own.
	SharedTLS net.Listener
}

// maxEphemeralTries bounds the search for a port that is free for both UDP
// and TCP when the configured port is 0 (tests).
const maxEphemeralTries = 20

// udpSocketBuffer is the SO_RCVBUF and SO_SNDBUF asked for on the listening
// UDP sockets, coturn's size for its own. All clients' packets pass through
// these few sockets, and the receive queue must ride out a pause of the
// reader (a GC, a busy CPU): with the default (about 90 packets of 1,000
// bytes) a few hundred milliseconds without CPU lost up to 10% of paced
// traffic in BenchmarkRelayVsCoturn, with this none. The kernel doubles the
// size for its bookkeeping and caps it at net.core.rmem_max and
// net.core.wmem_max (raise them on a busy server). Relay sockets keep the
// default, which is plenty for one client's stream.
const udpSocketBuffer = 2 << 20

// Listen opens every socket of the TURN server described by cfg: UDP (one
// socket per CPU) and TCP on cfg.Listen, and, when withTLS is set, TCP for
// TLS on cfg.TLSListen. An error names the address that could not be bound;
// nothing stays open after an error.
func Listen(cfg config.TURN, withTLS bool) (*Listeners, error) {
	return listen(cfg, withTLS, runtime.GOMAXPROCS(0))
}

// listen is Listen with n UDP sockets.
func listen(cfg config.TURN, withTLS bool, n int) (*Listeners, error) {
	n = max(n, 1)
	host, portStr, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("turn: listen %q: %w", cfg.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("turn: listen %q: bad port", cfg.Listen)
	}

	l := &Listeners{}
	tries := 1
	if port == 0 {
		tries = maxEphemeralTries
	}
	for try := 0; ; try++ {
		err = l.listenUDPAndTCP(host, port, n)
		if err == nil {
			break
		}
		if !isAddrInUse(err) || try+1 >= tries {
			return nil, err
		}
	}

	if withTLS {
		if l.TLS, err = net.Listen("tcp", cfg.TLSListen); err != nil {
			l.Close()
			return nil, fmt.Errorf("turn: %w", err)
		}
	}
	return l, nil
}

// listenUDPAndTCP binds n UDP sockets and one TCP listener on host:port.
// With port 0 the UDP sockets pick the port and TCP follows them.
//
// A wildcard host gets n UDP sockets per local address instead of n on the
// wildcard: a UDP reply must leave from the address the request went to, and
// a socket bound to the wildcard sends from whichever address the kernel
// prefers for the route back, which on a machine with two addresses (a
// secondary IP, a VPN, a 1:1 NAT'd elastic IP beside a private one) is the
// wrong one half the time, and the client drops the reply. coturn binds
// every address too. Addresses added after start are not served.
func (l *Listeners) listenUDPAndTCP(host string, port, n int) error {
	addr := net.JoinHostPort(host, strconv.Itoa(port))

	// SO_REUSEPORT would let a second Parley (same user) share the port
	// silently instead of failing at start, so first bind once without it:
	// that fails if anyone holds the port. The probe's port is then reused
	// for the group; the window between the two binds is harmless.
	probe, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("turn: %w", err) // net errors name the address
	}
	port = probe.LocalAddr().(*net.UDPAddr).Port
	probe.Close()

	hosts := []string{host}
	if ip := net.ParseIP(host); host == "" || ip.IsUnspecified() {
		if hosts, err = localAddrs(ip.To4() != nil); err != nil {
			return fmt.Errorf("turn: listen %s: %w", addr, err)
		}
	}
	lc := net.ListenConfig{Control: groupSocketOptions}
	for _, h := range hosts {
		a := net.JoinHostPort(h, strconv.Itoa(port))
		for range n {
			var pc net.PacketConn
			if useDataPlane() {
				pc, err = listenDataPlane(a)
			} else {
				pc, err = lc.ListenPacket(context.Background(), "udp", a)
			}
			if err != nil {
				l.Close()
				return fmt.Errorf("turn: %w", err)
			}
			l.UDP = append(l.UDP, pc)
		}
	}

	// TCP without SO_REUSEPORT: exactly one listener, and a busy port fails.
	// (A TCP reply always leaves from the connection's own address.)
	tl, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		l.Close()
		return fmt.Errorf("turn: %w", err)
	}
	l.TCP = tl
	return nil
}

// localAddrs lists the machine's addresses a wildcard listener covers: IPv4
// only, or IPv4 and IPv6 without link-local IPv6 addresses (they need a
// zone, and no TURN client reaches a server by one).
func localAddrs(v4only bool) ([]string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipn.IP
		if ip.To4() == nil && (v4only || ip.IsLinkLocalUnicast()) {
			continue
		}
		out = append(out, ip.String())
	}
	if len(out) == 0 {
		return nil, errors.New("no local address to bind")
	}
	return out, nil
}

// Close closes every socket; for a caller that cannot hand them to New.
func (l *Listeners) Close() error {
	var errs []error
	for _, pc := range l.UDP {
		errs = append(errs, pc.Close())
	}
	l.UDP = nil
	if l.TCP != nil {
		errs = append(errs, l.TCP.Close())
		l.TCP = nil
	}
	if l.TLS != nil {
		errs = append(errs, l.TLS.Close())
		l.TLS = nil
	}
	if l.SharedTLS != nil {
		errs = append(errs, l.SharedTLS.Close())
		l.SharedTLS = nil
	}
	return errors.Join(errs...)
}

// listenDataPlane opens a socket of a SO_REUSEPORT group for the data plane.
func listenDataPlane(addr string) (*udpSock, error) {
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return newUDPSock(ua.AddrPort(), setGroupOptions)
}

// groupSocketOptions sets SO_REUSEPORT and the buffer sizes of a listening
// UDP socket before bind.
func groupSocketOptions(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = setGroupOptions(int(fd)) }); err != nil {
		return err
	}
	return serr
}

// setGroupOptions sets SO_REUSEPORT and the buffer sizes on fd.
func setGroupOptions(fd int) error {
	return errors.Join(
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1),
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, udpSocketBuffer),
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, udpSocketBuffer),
	)
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
