package turn

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"
	"go.uber.org/goleak"

	"github.com/parley-chat/parley/config"
)

// allowLoopbackPeers lets relays reach an echo peer on 127.0.0.1, as
// --turn-allow-peers 127.0.0.1/32 would.
func allowLoopbackPeers(cfg *config.TURN, _ *Options) {
	cfg.AllowPeers = []string{"127.0.0.1/32"}
}

// TestRelay allocates, creates a permission, binds a channel and relays data
// both ways to a UDP echo peer, over each client transport.
func TestRelay(t *testing.T) {
	ts := startServer(t, true, allowLoopbackPeers)
	for i, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			before := ts.Stats()
			echo := startEcho(t, "127.0.0.1")
			c := ts.userClient(t, transport, fmt.Sprintf("p%d", i))
			relay := allocate(t, c)

			ra := relay.LocalAddr().(*net.UDPAddr)
			if !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) || ra.Port < ts.cfg.RelayPorts.Min || ra.Port > ts.cfg.RelayPorts.Max {
				t.Errorf("relayed address %v: want 127.0.0.1 and a port in %v", ra, ts.cfg.RelayPorts)
			}

			// The first write creates the permission and goes out as a Send
			// indication; pion's client binds a channel meanwhile.
			for j := range 5 {
				roundTrip(t, relay, echo.addr(), fmt.Appendf(nil, "%s indication %d", transport, j))
			}
			eventually(t, "a channel binding", func() bool { return ts.Stats().ChannelsTotal > before.ChannelsTotal })
			bound, ok := relay.(interface{ FindChannelNumberByAddr(net.Addr) (uint16, bool) })
			if !ok {
				t.Fatalf("relay %T has no channel lookup", relay)
			}
			eventually(t, "the client to see its channel", func() bool {
				_, ok := bound.FindChannelNumberByAddr(echo.addr())
				return ok
			})
			for j := range 20 {
				roundTrip(t, relay, echo.addr(), fmt.Appendf(nil, "%s channel %d", transport, j))
			}

			// The relay counts a packet after sending it, so the echo can
			// come back before the count.
			eventually(t, "25 packets to be counted", func() bool {
				return ts.Stats().PacketsToPeers-before.PacketsToPeers >= 25
			})
			after := ts.Stats()
			if got := after.AllocationsTotal - before.AllocationsTotal; got != 1 {
				t.Errorf("AllocationsTotal grew by %d, want 1", got)
			}
			if after.PermissionsTotal <= before.PermissionsTotal {
				t.Errorf("PermissionsTotal did not grow: %+v", after)
			}
			if got := after.PacketsToPeers - before.PacketsToPeers; got != 25 {
				t.Errorf("PacketsToPeers grew by %d, want 25", got)
			}
			if got := after.PacketsFromPeers - before.PacketsFromPeers; got != 25 {
				t.Errorf("PacketsFromPeers grew by %d, want 25", got)
			}
			if after.BytesToPeers <= before.BytesToPeers || after.BytesFromPeers <= before.BytesFromPeers {
				t.Errorf("byte counters did not grow: %+v", after)
			}
			if after.Allocations != before.Allocations+1 || after.Permissions < 1 || after.Channels < 1 {
				t.Errorf("gauges: %+v", after)
			}

			relay.Close()
			eventually(t, "the allocation to end", func() bool { return ts.Stats().Allocations == before.Allocations })
		})
	}
}

// TestAuthRefused: wrong, expired, unknown, malformed and forged credentials
// get 401 Unauthorized; valid ones work.
func TestAuthRefused(t *testing.T) {
	ts := startServer(t, false, nil)
	now := time.Now()
	valid, validPass := Credentials(testSecret, "alice", time.Hour, now)
	expired, expiredPass := Credentials(testSecret, "alice", -time.Minute, now)
	forged, forgedPass := Credentials("not-the-secret", "alice", time.Hour, now)
	future := fmt.Sprint(now.Add(time.Hour).Unix())
	tests := []struct {
		name, username, password string
	}{
		{"wrong password", valid, "d3JvbmcgcGFzc3dvcmQ="},
		{"expired", expired, expiredPass},
		{"forged with another secret", forged, forgedPass},
		{"unknown user", "alice", validPass},
		{"no expiry", ":alice", restPassword(testSecret, ":alice")},
		{"no id", future + ":", restPassword(testSecret, future+":")},
		{"only a timestamp", future, restPassword(testSecret, future)},
		{"expiry not a number", "tomorrow:alice", restPassword(testSecret, "tomorrow:alice")},
		{"signed expiry", "+" + future + ":alice", restPassword(testSecret, "+"+future+":alice")},
		{"expiry overflows", "99999999999999999999:alice", restPassword(testSecret, "99999999999999999999:alice")},
		{"id too long", future + ":" + strings.Repeat("a", 300), restPassword(testSecret, future+":"+strings.Repeat("a", 300))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			failures := ts.Stats().AuthFailures
			c := ts.client(t, "udp", tt.username, tt.password, nil)
			_, err := c.Allocate()
			if code := turnErrorCode(err); code != stun.CodeUnauthorized {
				t.Fatalf("Allocate: %v (code %d), want 401", err, code)
			}
			if ts.Stats().AuthFailures <= failures {
				t.Errorf("AuthFailures did not grow")
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		allocate(t, ts.client(t, "udp", valid, validPass, nil))
	})
}

// TestDeniedPeers: with the default policy, permissions and channel binds to
// special-purpose peers are refused, for IPv4 and IPv6 allocations,
// including IPv4-mapped IPv6 on the wire.
func TestDeniedPeers(t *testing.T) {
	// Public addresses that are not the peers under test: the relays bind
	// to loopback but the server believes it sits behind a 1:1 NAT.
	ts := startServer(t, false, func(_ *config.TURN, o *Options) {
		o.PublicIPs = []netip.Addr{netip.MustParseAddr("203.0.113.10"), netip.MustParseAddr("2001:db8::10")}
		o.RelayBindIPs = []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}
	})

	t.Run("pion client", func(t *testing.T) {
		relay := allocate(t, ts.userClient(t, "udp", "pion"))
		peer := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
		if _, err := relay.WriteTo([]byte("x"), peer); turnErrorCode(err) != stun.CodeForbidden {
			t.Errorf("WriteTo %v: %v, want 403", peer, err)
		}
	})

	v4 := []string{
		"127.0.0.1", "0.0.0.0", "::ffff:127.0.0.1", "10.0.0.1", "169.254.169.254",
		"172.16.0.1", "192.168.1.1", "100.64.0.1", "192.0.2.1", "198.18.0.1",
		"224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "::ffff:169.254.169.254",
	}
	v6 := []string{
		"::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "64:ff9b::7f00:1",
		"64:ff9b:1::a00:1", "2001:db8::1", "2001::1", "2002:7f00:1::1", "::7f00:1", "100::1",
	}
	check := func(t *testing.T, family pionturn.RequestedAddressFamily, peers []string) {
		rc := ts.rawClient(t, "raw")
		rc.allocate(family)
		for i, p := range peers {
			peer := rawPeerAddr{ip: netip.MustParseAddr(p), port: 3478}
			denied := ts.Stats().PermissionsDenied
			if code := errorCode(rc.request(stun.MethodCreatePermission, peer)); code != stun.CodeForbidden {
				t.Errorf("CreatePermission %v: code %d, want 403", peer, code)
			}
			if code := errorCode(rc.request(stun.MethodChannelBind, peer, channelNumber(0x4000+i))); code == 0 {
				t.Errorf("ChannelBind %v succeeded", peer)
			}
			if got := ts.Stats().PermissionsDenied - denied; got != 2 {
				t.Errorf("PermissionsDenied grew by %d for %v, want 2", got, peer)
			}
		}
		if n := ts.Stats().Permissions; n != 0 {
			t.Errorf("%d permissions exist", n)
		}
	}
	t.Run("ipv4", func(t *testing.T) { check(t, pionturn.RequestedAddressFamilyIPv4, v4) })
	t.Run("ipv6", func(t *testing.T) { check(t, pionturn.RequestedAddressFamilyIPv6, v6) })

	t.Run("public peer allowed", func(t *testing.T) {
		// A permission sends nothing, so a public address is safe to name.
		rc := ts.rawClient(t, "raw2")
		rc.allocate()
		if code := errorCode(rc.request(stun.MethodCreatePermission, rawPeerAddr{ip: netip.MustParseAddr("8.8.8.8"), port: 53})); code != 0 {
			t.Errorf("CreatePermission 8.8.8.8: code %d, want success", code)
		}
	})
}

// TestOwnRelayAddress: without any allow-list, clients of this server reach
// each other's relays on the server's own (here loopback) address, but no
// other port of it, except the AllowPeerAddrs entry.
func TestOwnRelayAddress(t *testing.T) {
	const own = "127.0.0.2"
	outside := listenOutside(t, own, 50000, 50999)
	sfu := startEcho(t, own)
	ts := startServer(t, false, func(cfg *config.TURN, o *Options) {
		o.PublicIPs = []netip.Addr{netip.MustParseAddr(own)}
		o.AllowPeerAddrs = []netip.AddrPort{sfu.addr().AddrPort()}
		cfg.RelayPorts = config.PortRange{Min: 50000, Max: 50999}
	})
	relayA := allocate(t, ts.userClient(t, "udp", "a"))
	clientB := ts.userClient(t, "udp", "b")
	relayB := allocate(t, clientB)
	if ip := relayA.LocalAddr().(*net.UDPAddr).IP.String(); ip != own {
		t.Fatalf("relay address %v, want %s", relayA.LocalAddr(), own)
	}

	if err := clientB.CreatePermission(relayA.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := relayA.WriteTo([]byte("hello B"), relayB.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	relayB.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := relayB.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello B" || from.String() != relayA.LocalAddr().String() {
		t.Fatalf("B got %q from %v, %v", buf[:n], from, err)
	}

	// The SFU address is allowed.
	roundTrip(t, relayA, sfu.addr(), []byte("to the sfu"))

	// Another port of the server's own address is not.
	denied := ts.Stats().PacketsDenied
	for range 3 {
		if _, err := relayA.WriteTo([]byte("to a local service"), outside.addr()); err != nil {
			t.Fatal(err) // the client cannot know; the server drops
		}
	}
	eventually(t, "denied packets to be counted", func() bool { return ts.Stats().PacketsDenied >= denied+3 })
	if n := outside.received.Load(); n != 0 {
		t.Errorf("the local service received %d packets", n)
	}
}

// listenOutside starts an echo peer on ip with a port outside [lo, hi].
func listenOutside(t *testing.T, ip string, lo, hi int) *echoPeer {
	t.Helper()
	for range 100 {
		c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		if p := c.LocalAddr().(*net.UDPAddr).Port; p < lo || p > hi {
			return runEcho(t, c)
		}
		c.Close()
	}
	t.Fatal("no port outside the relay range")
	return nil
}

// TestQuota: the third allocation of a user with quota 2 gets 486, and works
// once one of the others ended; the total quota holds across users.
func TestQuota(t *testing.T) {
	ts := startServer(t, false, func(cfg *config.TURN, _ *Options) {
		cfg.UserQuota = 2
		cfg.TotalQuota = 3
	})
	first := allocate(t, ts.userClient(t, "udp", "u1"))
	allocate(t, ts.userClient(t, "udp", "u1"))
	third := ts.userClient(t, "udp", "u1")
	if _, err := third.Allocate(); turnErrorCode(err) != stun.CodeAllocQuotaReached {
		t.Fatalf("third Allocate: %v, want 486", err)
	}
	first.Close()
	eventually(t, "the first allocation to end", func() bool { return ts.Stats().Allocations == 1 })
	allocate(t, third)

	allocate(t, ts.userClient(t, "udp", "u2")) // 3 in total
	if _, err := ts.userClient(t, "udp", "u3").Allocate(); turnErrorCode(err) != stun.CodeAllocQuotaReached {
		t.Fatalf("Allocate beyond the total quota: %v, want 486", err)
	}
	if got := ts.Stats().QuotaRefusals; got != 2 {
		t.Errorf("QuotaRefusals = %d, want 2", got)
	}
}

// TestQuotaConcurrent: many simultaneous Allocate requests of one user, each
// on its own TCP connection (so pion handles them in parallel), get no more
// than the quota.
func TestQuotaConcurrent(t *testing.T) {
	ts := startServer(t, false, func(cfg *config.TURN, _ *Options) { cfg.UserQuota = 2 })
	const n = 12
	clients := make([]*pionturn.Client, n)
	for i := range clients {
		clients[i] = ts.userClient(t, "tcp", "greedy")
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		ok     int
		relays []net.PacketConn
	)
	for _, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay, err := c.Allocate()
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
				relays = append(relays, relay)
			case turnErrorCode(err) != stun.CodeAllocQuotaReached:
				t.Errorf("Allocate: %v", err)
			}
		}()
	}
	wg.Wait()
	for _, r := range relays {
		r.Close()
	}
	if ok != 2 {
		t.Errorf("%d allocations succeeded, want 2", ok)
	}
	eventually(t, "allocations to end", func() bool { return ts.quota.allocations() == 0 })
}

// TestBinding: a STUN Binding request without credentials is answered with
// the client's address on every transport.
func TestBinding(t *testing.T) {
	ts := startServer(t, true, nil)
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			pc, addr := ts.dial(t, transport)
			c, err := pionturn.NewClient(&pionturn.ClientConfig{STUNServerAddr: addr, Conn: pc, RTO: 200 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Listen(); err != nil {
				t.Fatal(err)
			}
			got, err := c.SendBindingRequest()
			if err != nil {
				t.Fatal(err)
			}
			want := pc.LocalAddr()
			if sc, ok := pc.(*pionturn.STUNConn); ok {
				want = sc.Conn().LocalAddr()
			}
			if got.String() != want.String() {
				t.Errorf("reflexive address %v, want %v", got, want)
			}
		})
	}
}

// TestGarbage: random datagrams and TCP streams do not stop the server.
func TestGarbage(t *testing.T) {
	ts := startServer(t, true, nil)
	rng := rand.New(rand.NewPCG(1, 2))
	junk := func() []byte {
		b := make([]byte, rng.IntN(1500))
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		if len(b) >= 20 && rng.IntN(2) == 0 { // looks like STUN or ChannelData
			copy(b, []byte{0, 1, byte(len(b) >> 8), byte(len(b)), 0x21, 0x12, 0xA4, 0x42})
		} else if len(b) >= 4 && rng.IntN(2) == 0 {
			b[0] = 0x40
		}
		return b
	}

	udp, _ := ts.dial(t, "udp")
	server, _ := net.ResolveUDPAddr("udp", ts.udpAddr)
	for range 2000 {
		udp.WriteTo(junk(), server)
	}
	for _, addr := range []string{ts.udpAddr, ts.tlsAddr} {
		for range 20 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Write(junk())
			c.Close()
		}
	}
	for _, transport := range transports {
		allocate(t, ts.userClient(t, transport, "after-garbage-"+transport))
	}
}

// TestClose: Close ends allocations on every transport, idle connections and
// pending TLS handshakes, and leaves no goroutine behind.
func TestClose(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	log := testLogger(t)
	cfg := config.Default().TURN
	cfg.Listen, cfg.TLSListen, cfg.Secret = "127.0.0.1:0", "127.0.0.1:0", testSecret
	cfg.AllowPeers = []string{"127.0.0.1/32"}
	cert, roots := selfSignedCert(t)
	ls, err := Listen(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, ls, Options{
		PublicIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, cfg: cfg, udpAddr: ls.UDP[0].LocalAddr().String(), tlsAddr: ls.TLS.Addr().String(), roots: roots}

	// Clients are closed after the server, inside this test (not in
	// cleanups) so that goleak sees the end of their goroutines too.
	func() {
		sub := &cleanupT{TB: t}
		defer sub.run()
		echo := startEcho(sub, "127.0.0.1")
		for _, transport := range transports {
			relay := allocate(sub, ts.userClient(sub, transport, "closer-"+transport))
			roundTrip(sub, relay, echo.addr(), []byte("before close"))
		}
		idle, err := net.Dial("tcp", ts.udpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close()
		handshaking, err := net.Dial("tcp", ts.tlsAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer handshaking.Close()
		eventually(t, "connections to be accepted", func() bool { return s.Stats().TCPConnections == 4 })
		if got := s.Stats().Allocations; got != 3 {
			t.Fatalf("%d allocations, want 3", got)
		}

		start := time.Now()
		if err := s.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		t.Logf("Close took %v", time.Since(start))
		if st := s.Stats(); st.Allocations != 0 || st.TCPConnections != 0 {
			t.Errorf("after Close: %+v", st)
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}()
}

// cleanupT runs cleanups when run is called instead of at the end of the
// test.
type cleanupT struct {
	testing.TB
	mu  sync.Mutex
	fns []func()
}

func (c *cleanupT) Cleanup(f func()) {
	c.mu.Lock()
	c.fns = append(c.fns, f)
	c.mu.Unlock()
}

func (c *cleanupT) run() {
	c.mu.Lock()
	fns := c.fns
	c.fns = nil
	c.mu.Unlock()
	for i := len(fns) - 1; i >= 0; i-- {
		fns[i]()
	}
}

// TestNewErrors: bad options fail and close the listeners.
func TestNewErrors(t *testing.T) {
	cfg := config.Default().TURN
	cfg.Listen, cfg.TLSListen = "127.0.0.1:0", "127.0.0.1:0"
	public := []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	tests := []struct {
		name    string
		withTLS bool
		edit    func(*config.TURN, *Options)
	}{
		{"no public IP", false, func(_ *config.TURN, o *Options) { o.PublicIPs = nil }},
		{"unspecified public IP", false, func(_ *config.TURN, o *Options) { o.PublicIPs = []netip.Addr{netip.IPv4Unspecified()} }},
		{"two IPv4", false, func(_ *config.TURN, o *Options) {
			o.PublicIPs = append(o.PublicIPs, netip.MustParseAddr("127.0.0.2"))
		}},
		{"bind without public of its family", false, func(_ *config.TURN, o *Options) {
			o.RelayBindIPs = []netip.Addr{netip.MustParseAddr("::1")}
		}},
		{"TLS listener without config", true, nil},
		{"bad allow_peers", false, func(c *config.TURN, _ *Options) { c.AllowPeers = []string{"10.0.0.1"} }},
		{"bad relay ports", false, func(c *config.TURN, _ *Options) { c.RelayPorts = config.PortRange{Min: 5, Max: 4} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, o := cfg, Options{PublicIPs: public}
			if tt.edit != nil {
				tt.edit(&c, &o)
			}
			ls, err := Listen(c, tt.withTLS)
			if err != nil {
				t.Fatal(err)
			}
			port := ls.UDP[0].LocalAddr().String()
			if _, err := New(c, ls, o, testLogger(t)); err == nil {
				t.Fatal("New succeeded")
			} else {
				t.Log(err)
			}
			// The sockets were closed: the port is free again.
			pc, err := net.ListenPacket("udp", port)
			if err != nil {
				t.Fatalf("port still held: %v", err)
			}
			pc.Close()
		})
	}
}

// TestListen: one UDP socket per CPU and TCP on one port; a port in use
// fails with its address.
func TestListen(t *testing.T) {
	cfg := config.Default().TURN
	cfg.Listen, cfg.TLSListen = "127.0.0.1:0", "127.0.0.1:0"
	ls, err := Listen(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	addr := ls.UDP[0].LocalAddr().String()
	if len(ls.UDP) < 1 {
		t.Fatal("no UDP sockets")
	}
	for _, pc := range ls.UDP {
		if pc.LocalAddr().String() != addr {
			t.Errorf("UDP socket on %v, want %v", pc.LocalAddr(), addr)
		}
	}
	if ls.TCP.Addr().String() != addr {
		t.Errorf("TCP on %v, want %v", ls.TCP.Addr(), addr)
	}
	if ls.TLS == nil {
		t.Fatal("no TLS listener")
	}

	busy := cfg
	busy.Listen = addr
	if _, err := Listen(busy, false); err == nil || !strings.Contains(err.Error(), addr) {
		t.Errorf("Listen on a busy port: %v, want an error naming %s", err, addr)
	}
	busy.Listen, busy.TLSListen = "127.0.0.1:0", ls.TLS.Addr().String()
	if _, err := Listen(busy, true); err == nil || !strings.Contains(err.Error(), busy.TLSListen) {
		t.Errorf("Listen on a busy TLS port: %v, want an error naming %s", err, busy.TLSListen)
	}
	// Only TCP busy: the UDP sockets opened first are closed again.
	tcpOnly, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcpOnly.Close()
	busy.Listen = tcpOnly.Addr().String()
	if _, err := Listen(busy, false); err == nil {
		t.Error("Listen with the TCP port busy succeeded")
	}
	if pc, err := net.ListenPacket("udp", busy.Listen); err != nil {
		t.Errorf("UDP port still held after the failure: %v", err)
	} else {
		pc.Close()
	}
}

// TestLoggerFactory: pion's levels map onto slog, info lowered for the
// server's own factory, and nothing below the handler's level is formatted.
func TestLoggerFactory(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := NewLoggerFactory(log).NewLogger("x")
	l.Tracef("trace %d", 1)
	l.Debugf("debug %d", 1)
	l.Infof("info %d", 1)
	l.Warn("warn")
	l.Error("error")
	loggerFactory{log: log, info: slog.LevelDebug}.NewLogger("y").Info("quiet info")
	out := buf.String()
	for _, want := range []string{
		`level=DEBUG msg="debug 1" scope=x`, `level=INFO msg="info 1" scope=x`, "level=WARN msg=warn",
		"level=ERROR msg=error", `level=DEBUG msg="quiet info" scope=y`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "trace 1") {
		t.Errorf("log has a line below its level:\n%s", out)
	}
}

// TestIdleTimeout: TCP and TLS connections that stay silent are closed.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, true, func(_ *config.TURN, o *Options) { o.TCPIdleTimeout = 200 * time.Millisecond })
	plain, err := net.Dial("tcp", ts.udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	secure, err := tls.Dial("tcp", ts.tlsAddr, &tls.Config{RootCAs: ts.roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer secure.Close()
	for _, c := range []net.Conn{plain, secure} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || isTimeout(err) {
			t.Errorf("%v: read %v, want the server to close the connection", c.RemoteAddr(), err)
		}
	}
	eventually(t, "the connections to be forgotten", func() bool { return ts.Stats().TCPConnections == 0 })
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestRandomSecretServer: without turn.secret the server makes one, the Provider
// hands out credentials that work, and the secret never reaches the log.
func TestRandomSecretServer(t *testing.T) {
	var (
		mu  sync.Mutex
		buf bytes.Buffer
	)
	log := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: LevelTrace}))
	cfg := config.Default().TURN
	cfg.Listen = "127.0.0.1:0"
	ls, err := Listen(cfg, false)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, ls, Options{PublicIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.secret) < 20 {
		t.Fatalf("secret %q", s.secret)
	}
	ice := NewProvider(cfg, s, "").ICEServers("p1")
	srv := &testServer{Server: s, cfg: cfg, udpAddr: ls.UDP[0].LocalAddr().String()}
	relay := allocate(t, srv.client(t, "udp", ice[1].Username, ice[1].Credential, nil))
	relay.Close()
	eventually(t, "the allocation to end", func() bool { return s.Stats().Allocations == 0 })

	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(buf.String(), s.secret) {
		t.Errorf("the secret is in the log:\n%s", buf.String())
	}
	if !strings.Contains(buf.String(), "random") {
		t.Errorf("the log does not say the secret is random:\n%s", buf.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// Two clients of this server relay to each other, as two browsers behind
// symmetric NATs do: over channels, each relay is the other's peer, and the
// data plane hands packets from one relay to the other without a trip
// through the network. Every message arrives, from the other's relayed
// address, and is counted once each way.
func TestRelayToRelay(t *testing.T) {
	ts := startServer(t, false, func(*config.TURN, *Options) {})
	if useDataPlane() && ts.plane == nil {
		t.Fatal("the data plane is not running")
	}
	clientA, clientB := ts.userClient(t, "udp", "a"), ts.userClient(t, "udp", "b")
	relayA, relayB := allocate(t, clientA), allocate(t, clientB)
	if err := clientA.CreatePermission(relayB.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if err := clientB.CreatePermission(relayA.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	before := ts.Stats()

	const messages = 50
	buf := make([]byte, 1500)
	for i := range messages {
		for _, dir := range []struct {
			from, to net.PacketConn
		}{{relayA, relayB}, {relayB, relayA}} {
			msg := fmt.Appendf(nil, "message %d from %v", i, dir.from.LocalAddr())
			if _, err := dir.from.WriteTo(msg, dir.to.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			dir.to.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := dir.to.ReadFrom(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) || from.String() != dir.from.LocalAddr().String() {
				t.Fatalf("got %q from %v (%v), want %q from %v", buf[:n], from, err, msg, dir.from.LocalAddr())
			}
		}
	}
	// pion's client binds a channel after its first Send indication: the
	// rest went as channel data.
	if after := ts.Stats(); after.ChannelsTotal < before.ChannelsTotal+2 {
		t.Errorf("channels bound: %d, want 2", after.ChannelsTotal-before.ChannelsTotal)
	}
	eventually(t, "every message counted", func() bool {
		st := ts.Stats()
		return st.PacketsToPeers-before.PacketsToPeers == 2*messages && st.PacketsFromPeers-before.PacketsFromPeers == 2*messages
	})
}
