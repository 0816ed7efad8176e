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
	// UDP are sockets bound to the same address with SO_REUSEPORT, one per
	// usable CPU: the kernel spreads clients over them by their address, so
	// every core reads packets.
	UDP []net.PacketConn
	// TCP carries STUN/TURN over TCP, on the port of the UDP sockets.
	TCP net.Listener
	// TLS is a plain TCP listener that New wraps in TLS with
	// Options.TLSConfig; nil when TURN over TLS is off.
	TLS net.Listener
}

// maxEphemeralTries bounds the search for a port that is free for both UDP
// and TCP when the configured port is 0 (tests).
const maxEphemeralTries = 20

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
	addr = net.JoinHostPort(host, strconv.Itoa(port))

	lc := net.ListenConfig{Control: reusePort}
	for i := 0; i < n; i++ {
		pc, err := lc.ListenPacket(context.Background(), "udp", addr)
		if err != nil {
			l.Close()
			return fmt.Errorf("turn: %w", err)
		}
		l.UDP = append(l.UDP, pc)
	}

	// TCP without SO_REUSEPORT: exactly one listener, and a busy port fails.
	tl, err := net.Listen("tcp", addr)
	if err != nil {
		l.Close()
		return fmt.Errorf("turn: %w", err)
	}
	l.TCP = tl
	return nil
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
	return errors.Join(errs...)
}

// reusePort sets SO_REUSEPORT before bind.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

func isAddrInUse(err error) bool { return errors.Is(err, syscall.EADDRINUSE) }
