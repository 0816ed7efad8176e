package sfu

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/parley-chat/parley/config"
	"github.com/pion/ice/v4"
	"github.com/pion/logging"
)

// Socket buffer sizes of the media sockets. One UDP socket carries every
// participant's media, so a burst of keyframes to a full room must fit.
const (
	udpBufferSize = 4 << 20
	// tcpWriteBuffer is per ICE-TCP connection: when it is full pion drops
	// packets instead of blocking the writer (a stalled TCP subscriber must
	// not stall its forwarding goroutine for long).
	tcpWriteBuffer = 4 << 20
	// tcpReadPackets is how many packets each ICE-TCP connection queues.
	tcpReadPackets = 64
)

// Listeners are the SFU's media sockets: one UDP port that carries ICE, DTLS
// and SRTP of every participant, and one TCP port for ICE-TCP. Listen opens
// them before anything is served, so a busy port stops start-up; New uses
// them; SFU.Close (or Close, when New was never called) closes them.
type Listeners struct {
	// Static after construction.
	udpMux   ice.UDPMux
	tcpMux   *ice.TCPMuxDefault
	udpAddr  *net.UDPAddr
	tcpAddr  net.Addr
	loopback bool // bound to a loopback address: loopback candidates wanted
	logs     *logTarget

	closeOnce sync.Once
	closeErr  error
}

// Listen opens the UDP port cfg.UDPPort and the ICE-TCP port cfg.TCPPort on
// bindIP. An empty or unspecified bindIP listens on every local address (one
// UDP socket per address, all on the same port, so that replies leave from
// the address the client used). Port 0 picks a free port, for tests. Errors
// name the address that could not be bound.
func Listen(cfg config.SFU, bindIP string) (*Listeners, error) {
	var ip net.IP
	if bindIP != "" {
		if ip = net.ParseIP(bindIP); ip == nil {
			return nil, fmt.Errorf("sfu: bind address %q is not an IP address", bindIP)
		}
	}
	l := &Listeners{logs: &logTarget{}}
	pionLog := loggerFactory{target: l.logs}.NewLogger("ice")

	udpAddr := &net.UDPAddr{IP: ip, Port: cfg.UDPPort}
	if ip != nil && !ip.IsUnspecified() {
		conn, err := net.ListenUDP("udp", udpAddr)
		if err != nil {
			return nil, fmt.Errorf("sfu: listen udp %s: %w", udpAddr, err)
		}
		_ = conn.SetReadBuffer(udpBufferSize)
		_ = conn.SetWriteBuffer(udpBufferSize)
		l.udpMux = ice.NewUDPMuxDefault(ice.UDPMuxParams{UDPConn: conn, Logger: pionLog})
		l.udpAddr = conn.LocalAddr().(*net.UDPAddr)
		l.loopback = ip.IsLoopback()
	} else {
		mux, port, err := listenMultiUDP(ip, cfg.UDPPort, false, pionLog)
		if errors.Is(err, errNoAddress) {
			// A machine (or network namespace) with nothing but loopback.
			mux, port, err = listenMultiUDP(ip, cfg.UDPPort, true, pionLog)
			l.loopback = true
		}
		if err != nil {
			return nil, fmt.Errorf("sfu: listen udp %s: %w", udpAddr, err)
		}
		l.udpMux = mux
		l.udpAddr = &net.UDPAddr{IP: ip, Port: port}
	}

	tcpAddr := net.JoinHostPort(bindIP, strconv.Itoa(cfg.TCPPort))
	ln, err := net.Listen("tcp", tcpAddr)
	if err != nil {
		_ = l.udpMux.Close()
		return nil, fmt.Errorf("sfu: listen tcp %s: %w", tcpAddr, err)
	}
	l.tcpAddr = ln.Addr()
	l.tcpMux = ice.NewTCPMuxDefault(ice.TCPMuxParams{
		Listener:        ln,
		Logger:          pionLog,
		ReadBufferSize:  tcpReadPackets,
		WriteBufferSize: tcpWriteBuffer,
	})
	return l, nil
}

var errNoAddress = errors.New("no usable local address")

// listenMultiUDP opens one UDP socket per local address, all on port, with
// or without the loopback addresses. Port 0 asks the kernel for a free port
// once and then uses it everywhere; should another process take it in
// between, it tries again.
func listenMultiUDP(ip net.IP, port int, loopback bool, log logging.LeveledLogger) (ice.UDPMux, int, error) {
	networks := []ice.NetworkType{ice.NetworkTypeUDP4, ice.NetworkTypeUDP6}
	if ip != nil && ip.To4() != nil { // 0.0.0.0: IPv4 only
		networks = networks[:1]
	}
	opts := []ice.UDPMuxFromPortOption{
		ice.UDPMuxFromPortWithNetworks(networks...),
		ice.UDPMuxFromPortWithReadBufferSize(udpBufferSize),
		ice.UDPMuxFromPortWithWriteBufferSize(udpBufferSize),
		ice.UDPMuxFromPortWithLogger(log),
	}
	if loopback {
		opts = append(opts, ice.UDPMuxFromPortWithLoopback())
	}
	var lastErr error
	for range 3 {
		p := port
		if p == 0 {
			probe, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
			if err != nil {
				return nil, 0, err
			}
			p = probe.LocalAddr().(*net.UDPAddr).Port
			_ = probe.Close()
		}
		mux, err := ice.NewMultiUDPMuxFromPort(p, opts...)
		if err == nil {
			if len(mux.GetListenAddresses()) == 0 {
				_ = mux.Close()
				return nil, 0, errNoAddress
			}
			return mux, p, nil
		}
		lastErr = err
		if port != 0 {
			break
		}
		log.Warnf("port %d was taken before it could be bound, trying another", p)
	}
	return nil, 0, lastErr
}

// UDPAddr is the address of the UDP media socket (the unspecified address
// when it listens on every local address).
func (l *Listeners) UDPAddr() net.Addr { return l.udpAddr }

// TCPAddr is the address of the ICE-TCP listener.
func (l *Listeners) TCPAddr() net.Addr { return l.tcpAddr }

// bound reports whether the UDP socket is bound to ip.
func (l *Listeners) bound(ip net.IP) bool {
	for _, a := range l.udpMux.GetListenAddresses() {
		if ua, ok := a.(*net.UDPAddr); ok && ua.IP.Equal(ip) {
			return true
		}
	}
	return false
}

// Close closes both sockets. It is safe to call more than once.
func (l *Listeners) Close() error {
	l.closeOnce.Do(func() {
		l.closeErr = errors.Join(l.udpMux.Close(), l.tcpMux.Close())
		if errors.Is(l.closeErr, net.ErrClosed) {
			l.closeErr = nil
		}
	})
	return l.closeErr
}
