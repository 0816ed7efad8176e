package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"

	pionturn "github.com/pion/turn/v5"
	"github.com/pion/webrtc/v4"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/sfu"
	"github.com/parley-chat/parley/turn"
)

// checkTimeout bounds each self-test.
const checkTimeout = 10 * time.Second

// runCheck is `parley check [flags]`: it loads the configuration as the
// server would, then reports what would stop that server or its calls on
// this host. It contacts no outside server: listeners are bound and
// released, and the TURN and SFU self-tests run over loopback on ports the
// kernel picks. It returns the exit code: 0 when nothing failed (warnings
// allowed), 1 on a failure, 2 for a bad configuration.
func runCheck(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(args, getenv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "parley check:", err)
		return 2
	}
	// The self-tests' own servers log only what goes wrong, unless asked.
	level := slog.LevelError
	if cfg.Log.Level == "debug" {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	c := &checker{w: stdout}
	c.checkListeners(cfg)
	c.checkAddress(cfg)
	c.checkHTTPS(cfg)
	c.checkTURN(cfg, log)
	c.checkSFU(log)

	fmt.Fprintln(stdout)
	switch {
	case c.failures > 0:
		fmt.Fprintf(stdout, "%d failed, %d warnings: parley would not work as configured on this host.\n", c.failures, c.warnings)
		return 1
	case c.warnings > 0:
		fmt.Fprintf(stdout, "All checks passed, with %d warnings.\n", c.warnings)
	default:
		fmt.Fprintln(stdout, "All checks passed.")
	}
	return 0
}

// checker writes one line per check and counts the outcomes.
type checker struct {
	w                  io.Writer
	failures, warnings int
}

func (c *checker) section(title string) { fmt.Fprintf(c.w, "\n%s\n", title) }

func (c *checker) ok(format string, args ...any) {
	fmt.Fprintf(c.w, "  ok    %s\n", fmt.Sprintf(format, args...))
}

func (c *checker) warn(format string, args ...any) {
	c.warnings++
	fmt.Fprintf(c.w, "  warn  %s\n", fmt.Sprintf(format, args...))
}

func (c *checker) fail(format string, args ...any) {
	c.failures++
	fmt.Fprintf(c.w, "  FAIL  %s\n", fmt.Sprintf(format, args...))
}

func (c *checker) skip(format string, args ...any) {
	fmt.Fprintf(c.w, "  skip  %s\n", fmt.Sprintf(format, args...))
}

// checkListeners binds every listener the configuration asks for, with the
// same code the server uses where there is one (turn.Listen, sfu.Listen),
// holds them all at once (so two settings on one port fail as they would at
// start) and releases them.
func (c *checker) checkListeners(cfg config.Config) {
	c.section("Listeners (bound and released again; a running parley holds them, so stop it first)")
	var held []io.Closer
	defer func() {
		for _, h := range held {
			h.Close()
		}
	}()
	tcp := func(what, addr string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			c.fail("%s: tcp %s: %v%s", what, addr, err, bindHint(err))
			return
		}
		held = append(held, ln)
		c.ok("%s: tcp %s", what, ln.Addr())
	}

	tcp("listen (page, /ws, /api)", cfg.Listen)
	if cfg.TLS.Enabled() && cfg.TLS.RedirectListen != "" {
		tcp("http-redirect-listen (HTTP to HTTPS, ACME HTTP-01)", cfg.TLS.RedirectListen)
	}
	if cfg.Metrics.Listen != "" {
		tcp("metrics-listen", cfg.Metrics.Listen)
	}
	if cfg.TURN.Enabled {
		ls, err := turn.Listen(cfg.TURN, cfg.TLS.Enabled())
		if err != nil {
			c.fail("turn-listen %s (udp and tcp)%s: %v%s", cfg.TURN.Listen, ifTLS(cfg, " and turn-tls-listen "+cfg.TURN.TLSListen), err, bindHint(err))
		} else {
			held = append(held, ls)
			c.ok("turn-listen: udp and tcp %s (%d UDP sockets)", ls.TCP.Addr(), len(ls.UDP))
			if ls.TLS != nil {
				c.ok("turn-tls-listen: tcp %s", ls.TLS.Addr())
			}
		}
	} else {
		c.skip("turn-listen: the built-in TURN server is off (--turn=false)")
	}
	sl, err := sfu.Listen(cfg.SFU, "")
	if err != nil {
		c.fail("sfu-udp-port %d and sfu-tcp-port %d: %v%s", cfg.SFU.UDPPort, cfg.SFU.TCPPort, err, bindHint(err))
	} else {
		held = append(held, sl)
		c.ok("sfu-udp-port: udp %s (SFU media)", sl.UDPAddr())
		c.ok("sfu-tcp-port: tcp %s (ICE-TCP fallback)", sl.TCPAddr())
	}
}

func ifTLS(cfg config.Config, s string) string {
	if cfg.TLS.Enabled() {
		return s
	}
	return ""
}

// bindHint explains the usual reasons a bind fails.
func bindHint(err error) string {
	switch {
	case errors.Is(err, syscall.EACCES):
		return " (ports below 1024 need root or CAP_NET_BIND_SERVICE; deploy/parley.service grants it)"
	case errors.Is(err, syscall.EADDRINUSE):
		return " (another program, or a running parley, holds it)"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return " (no interface of this host has that address)"
	}
	return ""
}

// checkAddress reports the address clients are told to reach for TURN
// relays and SFU media, and whether the internet can reach it.
func (c *checker) checkAddress(cfg config.Config) {
	c.section("Advertised address (for TURN relays and SFU media)")
	var ip netip.Addr
	if cfg.PublicIP != "" {
		ip = netip.MustParseAddr(cfg.PublicIP) // validated by config
		c.ok("%s, from --public-ip", ip)
	} else {
		detected, err := turn.DetectPublicIP()
		if err != nil {
			c.warn("cannot detect an address (%v); clients would be told 127.0.0.1: set --public-ip", err)
			return
		}
		ip = detected
		c.ok("%s, detected from the interface of the default route (no packet sent)", ip)
	}
	switch {
	case ip.IsLoopback():
		c.warn("%s is a loopback address: only this machine can reach it; set --public-ip", ip)
	case ip.IsLinkLocalUnicast():
		c.warn("%s is link-local: not reachable beyond this network segment; set --public-ip", ip)
	case ip.IsPrivate(), cgnat.Contains(ip.Unmap()):
		c.warn("%s is private: fine on a LAN; for an internet install set --public-ip to the public address and forward the ports to this host", ip)
	default:
		c.ok("%s is a public address", ip)
	}
	if !isHostAddr(ip) {
		c.ok("%s is not an address of this host: the ports must be forwarded to it (1:1 NAT, as on many cloud VMs)", ip)
	}
}

// cgnat is the shared address space of carrier-grade NAT (RFC 6598), which
// netip does not count as private.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// isHostAddr reports whether ip is assigned to an interface of this host.
func isHostAddr(ip netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true // cannot tell; say nothing
	}
	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if x, ok := netip.AddrFromSlice(p.IP); ok && x.Unmap() == ip.Unmap() {
				return true
			}
		}
	}
	return false
}

// checkHTTPS reports whether browsers elsewhere will allow the camera.
func (c *checker) checkHTTPS(cfg config.Config) {
	c.section("HTTPS")
	switch {
	case len(cfg.TLS.ACMEDomains) > 0:
		c.ok("certificates over ACME for %v from %s (obtained when parley starts; needs TCP 80 or 443 reachable from the internet)", cfg.TLS.ACMEDomains, cfg.TLS.ACMEDirectory)
	case cfg.TLS.Cert != "":
		c.ok("certificate files %s and %s (loaded when parley starts)", cfg.TLS.Cert, cfg.TLS.Key)
	case cfg.TLS.SelfSigned:
		c.warn("self-signed certificate: every browser shows a warning first; fine on a LAN")
	default:
		c.warn("HTTPS is off: browsers allow the camera only on https:// pages or http://localhost; use --acme-domain NAME (or --tls-cert/--tls-key, or a TLS reverse proxy)")
	}
}

// checkTURN allocates a relay on a temporary built-in TURN server over
// loopback, over UDP and over TCP, and sends a packet through it to a local
// peer and back. The server uses the configured relay port range; relaying
// to 127.0.0.1, which the real server refuses, is allowed for this test
// alone.
func (c *checker) checkTURN(cfg config.Config, log *slog.Logger) {
	c.section("TURN self-test (temporary server on 127.0.0.1, relay ports " + cfg.TURN.RelayPorts.String() + ")")
	if !cfg.TURN.Enabled {
		c.skip("the built-in TURN server is off (--turn=false)")
		return
	}
	for _, transport := range []string{"udp", "tcp"} {
		start := time.Now()
		relay, err := turnSelfTest(cfg.TURN, transport, log)
		if err != nil {
			c.fail("allocation over %s: %v", transport, err)
			continue
		}
		c.ok("allocation over %s: relay %s; a packet went to a peer and back through it (%v)", transport, relay, time.Since(start).Round(time.Millisecond))
	}
}

func turnSelfTest(cfg config.TURN, transport string, log *slog.Logger) (string, error) {
	loopback := netip.MustParseAddr("127.0.0.1")
	cfg.Listen = "127.0.0.1:0"
	cfg.Secret = rand.Text()
	cfg.AllowPeers = []string{"127.0.0.1/32"}
	cfg.UserQuota, cfg.TotalQuota = 1, 1
	ls, err := turn.Listen(cfg, false)
	if err != nil {
		return "", err
	}
	srv, err := turn.New(cfg, ls, turn.Options{PublicIPs: []netip.Addr{loopback}}, log)
	if err != nil {
		return "", err
	}
	defer srv.Close()
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Endpoint().Port))

	var conn net.PacketConn
	switch transport {
	case "udp":
		conn, err = net.ListenPacket("udp4", "127.0.0.1:0")
	case "tcp":
		var tc net.Conn
		tc, err = net.DialTimeout("tcp", addr, checkTimeout)
		if err == nil {
			conn = pionturn.NewSTUNConn(tc)
		}
	}
	if err != nil {
		return "", err
	}
	defer conn.Close()

	user, pass := turn.Credentials(cfg.Secret, "parley-check", time.Minute, time.Now())
	client, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: user, Password: pass,
		LoggerFactory: turn.NewLoggerFactory(log.With("side", "check-client")),
	})
	if err != nil {
		return "", err
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		return "", err
	}
	relay, err := client.Allocate()
	if err != nil {
		return "", fmt.Errorf("allocate: %w", err)
	}
	defer relay.Close()

	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer peer.Close()
	go func() { // echo one packet
		buf := make([]byte, 1500)
		peer.SetReadDeadline(time.Now().Add(checkTimeout))
		if n, from, err := peer.ReadFrom(buf); err == nil {
			peer.WriteTo(buf[:n], from)
		}
	}()

	msg := []byte("parley check " + rand.Text())
	if _, err := relay.WriteTo(msg, peer.LocalAddr()); err != nil {
		return "", fmt.Errorf("send through the relay: %w", err)
	}
	relay.SetReadDeadline(time.Now().Add(checkTimeout))
	buf := make([]byte, 1500)
	for {
		n, _, err := relay.ReadFrom(buf)
		if err != nil {
			return "", fmt.Errorf("nothing came back through the relay %s: %w", relay.LocalAddr(), err)
		}
		if bytes.Equal(buf[:n], msg) {
			return relay.LocalAddr().String(), nil
		}
	}
}

// checkSFU connects a pion PeerConnection, standing in for a browser, to a
// temporary SFU on 127.0.0.1 over UDP and over ICE-TCP, through the same
// Join and negotiation the signaling server drives, and waits until ICE and
// the DTLS handshake are done. It shows that the SFU's WebRTC stack works on
// this host; the configured media ports are checked among the listeners.
func (c *checker) checkSFU(log *slog.Logger) {
	c.section("SFU self-test (temporary SFU on 127.0.0.1; a pion PeerConnection plays the browser)")
	for _, network := range []webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4} {
		start := time.Now()
		if err := sfuSelfTest(network, log); err != nil {
			c.fail("ICE and DTLS over %s: %v", network, err)
			continue
		}
		c.ok("ICE and DTLS over %s: connected (%v)", network, time.Since(start).Round(time.Millisecond))
	}
}

func sfuSelfTest(network webrtc.NetworkType, log *slog.Logger) (err error) {
	ls, err := sfu.Listen(config.SFU{}, "127.0.0.1")
	if err != nil {
		return err
	}
	media, err := sfu.New(ls, sfu.Options{}, log.With("part", "check-sfu"))
	if err != nil {
		ls.Close()
		return err
	}
	// Messages each way go through one ordered queue, as over the
	// WebSocket: a description always before its candidates. toServer
	// starts once Join has returned the participant its functions use.
	toClient, toServer := newQueue(), newQueue()
	toClient.start()
	var part *sfu.Participant
	var pc *webrtc.PeerConnection
	defer func() {
		if part != nil {
			part.Close()
		}
		if pc != nil {
			pc.Close()
		}
		media.Close()
		toClient.stop()
		toServer.stop()
	}()

	se := webrtc.SettingEngine{LoggerFactory: turn.NewLoggerFactory(log.With("side", "check-client"))}
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() && ip.To4() != nil })
	se.SetNetworkTypes([]webrtc.NetworkType{network})
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		return err
	}
	pc, err = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return err
	}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio); err != nil {
		return err
	}

	failed := make(chan error, 1)
	report := func(err error) {
		if err != nil {
			select {
			case failed <- err:
			default:
			}
		}
	}
	sig := &checkSignaler{pc: pc, toClient: toClient, toServer: toServer, report: report}
	part, err = media.Join("check", "check", sig)
	if err != nil {
		return err
	}
	sig.part = part // read only by toServer's functions, which start below
	toServer.start()

	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand != nil {
			init := cand.ToJSON()
			toServer.push(func() { report(part.HandleCandidate(init)) })
		}
	})
	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			once.Do(func() { close(connected) })
		case webrtc.PeerConnectionStateFailed:
			report(errors.New("the connection failed"))
		}
	})

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	toServer.push(func() { report(part.HandleOffer(offer.SDP)) })

	select {
	case <-connected:
		return nil
	case err := <-failed:
		return err
	case <-time.After(checkTimeout):
		return fmt.Errorf("not connected after %v (ICE state %s)", checkTimeout, pc.ICEConnectionState())
	}
}

// checkSignaler is the SFU's way back to the self-test's PeerConnection.
type checkSignaler struct {
	pc                 *webrtc.PeerConnection
	toClient, toServer *queue
	report             func(error)
	part               *sfu.Participant // set before toServer starts
}

func (s *checkSignaler) SendAnswer(sdp string) {
	s.toClient.push(func() {
		s.report(s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}))
	})
}

// SendOffer is not expected from an SFU with nothing to forward; it is
// answered anyway, as a browser would.
func (s *checkSignaler) SendOffer(sdp string) {
	s.toClient.push(func() {
		err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp})
		var answer webrtc.SessionDescription
		if err == nil {
			answer, err = s.pc.CreateAnswer(nil)
		}
		if err == nil {
			err = s.pc.SetLocalDescription(answer)
		}
		if err != nil {
			s.report(err)
			return
		}
		s.toServer.push(func() { s.report(s.part.HandleAnswer(answer.SDP)) })
	})
}

func (s *checkSignaler) SendCandidate(c webrtc.ICECandidateInit) {
	s.toClient.push(func() { s.report(s.pc.AddICECandidate(c)) })
}

// queue runs functions one at a time, in the order they were pushed, on a
// goroutine of its own from start to stop.
type queue struct {
	mu      sync.Mutex
	pending []func() // guarded by mu
	stopped bool     // guarded by mu
	wake    chan struct{}
	done    chan struct{}
	started bool // owned by the caller of start and stop
}

func newQueue() *queue {
	return &queue{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (q *queue) start() {
	q.started = true
	go func() {
		defer close(q.done)
		for range q.wake {
			for {
				q.mu.Lock()
				if q.stopped || len(q.pending) == 0 {
					q.mu.Unlock()
					break
				}
				f := q.pending[0]
				q.pending = q.pending[1:]
				q.mu.Unlock()
				f()
			}
		}
	}()
}

// push queues f; after stop it does nothing.
func (q *queue) push(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.stopped {
		return
	}
	q.pending = append(q.pending, f)
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// stop drops what is queued and waits for the function running, if any.
func (q *queue) stop() {
	q.mu.Lock()
	q.stopped = true
	q.pending = nil
	close(q.wake)
	q.mu.Unlock()
	if q.started {
		<-q.done
	}
}
