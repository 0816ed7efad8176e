// Package turn is Parley's built-in STUN/TURN server, on pion/turn/v5.
//
// Listen opens the sockets (UDP with one socket per CPU, TCP, and TCP for
// TLS); New serves STUN and TURN on them. Credentials follow the TURN REST
// scheme (coturn's use-auth-secret), so coturn's client tools work against
// the server, and a Provider hands participants credentials and ICE server
// lists for the built-in server, an external coturn, or both. Relays go
// only to peers the policy allows (no loopback, private, link-local or other
// special-purpose addresses unless allow-listed), and allocations are
// limited per user and in total.
package turn

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/parley-chat/parley/config"
)

// DefaultRealm is the realm of the server unless Options.Realm says otherwise.
const DefaultRealm = "parley"

// closeTimeout bounds how long Close waits for pion's goroutines to let go
// of allocations and connections.
const closeTimeout = 5 * time.Second

// Options are the settings of a Server that do not come from config.TURN.
type Options struct {
	// PublicIPs are the addresses clients are told to reach the relays at
	// (XOR-RELAYED-ADDRESS): at most one IPv4 and one IPv6 address. The
	// first is also the host of the ICE server URLs. Required; cmd/parley
	// passes config.Config.PublicIP or DetectPublicIP(). Clients may relay
	// to these addresses whatever their range, but only to relay ports, so
	// that two clients of this server reach each other's relays and nothing
	// else that listens on the host.
	PublicIPs []netip.Addr
	// RelayBindIPs are local addresses the relay sockets bind to, at most one
	// per family. For a family without one, relays bind to its public IP if
	// that is an address of this host, else to the unspecified address (a
	// host behind 1:1 NAT).
	RelayBindIPs []netip.Addr
	// TLSConfig serves TURN over TLS on Listeners.TLS; required when that is
	// set.
	TLSConfig *tls.Config
	// AllowPeerAddrs are peers that clients may always relay to, even in a
	// denied range: the server's own SFU media address (public IP and
	// sfu.udp_port).
	AllowPeerAddrs []netip.AddrPort
	// Realm is the TURN realm; empty means DefaultRealm.
	Realm string
	// Now is the clock that credential expiry is checked against; nil means
	// time.Now.
	Now func() time.Time
	// TCPIdleTimeout closes TCP and TLS connections that sent nothing for
	// so long; 0 means 15 minutes, longer than any live allocation stays
	// silent (permissions are refreshed every 5 minutes, channels every 10).
	TCPIdleTimeout time.Duration
}

// Server is a running STUN/TURN server. Create it with New, stop it with
// Close.
type Server struct {
	// Static after construction.
	log      *slog.Logger
	secret   string // never logged
	endpoint Endpoint
	now      func() time.Time
	auth     *restAuth
	policy   *peerPolicy
	relays   *relayAllocator
	quota    *quota
	tracker  *connTracker
	udp      []*udpGroup  // one per local address
	plane    *dataPlane   // nil when pion relays everything
	tlsL     *tlsListener // nil without TLS
	pion     *pionturn.Server

	counters counters

	closing   atomic.Bool   // set at the start of Close
	drained   chan struct{} // closed once closing and no allocation is left
	drainOnce sync.Once
	closeOnce sync.Once
	closeErr  error // result of Close; written once by closeOnce
}

// counters are the accounting of the server. Gauges are kept from pion's
// events; a permission deleted twice (a timer racing the allocation's end)
// can make them drift by one, so Stats clamps them at zero.
type counters struct {
	allocationsTotal  atomic.Uint64
	quotaRefusals     atomic.Uint64
	authFailures      atomic.Uint64
	permissions       atomic.Int64
	permissionsTotal  atomic.Uint64
	permissionsDenied atomic.Uint64
	channels          atomic.Int64
	channelsTotal     atomic.Uint64
}

// Stats is a snapshot of the server's accounting, for logs and metrics.
type Stats struct {
	Allocations       int    // allocations now
	AllocationsTotal  uint64 // allocations created since start
	QuotaRefusals     uint64 // Allocate requests refused with 486 Allocation Quota Reached
	AuthFailures      uint64 // requests with a malformed, expired, unknown or forged credential
	Permissions       int64  // permissions now
	PermissionsTotal  uint64 // permissions created since start
	PermissionsDenied uint64 // permissions and channel binds refused by the relay policy
	Channels          int64  // channel bindings now
	ChannelsTotal     uint64 // channel bindings created since start
	PacketsToPeers    uint64 // packets relayed from clients to peers
	BytesToPeers      uint64 // payload bytes relayed from clients to peers
	PacketsFromPeers  uint64 // packets received from peers on relay sockets (including unpermitted ones pion drops)
	BytesFromPeers    uint64 // payload bytes of PacketsFromPeers
	PacketsDenied     uint64 // packets to the server's own addresses dropped by the per-packet policy
	TCPConnections    int    // open TCP and TLS connections
}

// New starts a STUN/TURN server on ls. From the call on the sockets belong to
// the server: Close closes them, and so does New when it fails.
func New(cfg config.TURN, ls *Listeners, opts Options, log *slog.Logger) (*Server, error) {
	s, err := newServer(cfg, ls, opts, log)
	if err != nil {
		ls.Close()
		return nil, fmt.Errorf("turn: %w", err)
	}
	return s, nil
}

func newServer(cfg config.TURN, ls *Listeners, opts Options, log *slog.Logger) (*Server, error) {
	if ls == nil || (len(ls.UDP) == 0 && ls.TCP == nil && ls.TLS == nil && ls.SharedTLS == nil) {
		return nil, errors.New("no listeners")
	}
	if ls.TLS != nil && opts.TLSConfig == nil {
		return nil, errors.New("a TLS listener needs Options.TLSConfig")
	}
	v4, v6, err := relayFamilies(opts.PublicIPs, opts.RelayBindIPs)
	if err != nil {
		return nil, err
	}
	if cfg.RelayPorts.Min < 1 || cfg.RelayPorts.Max > 65535 || cfg.RelayPorts.Min > cfg.RelayPorts.Max {
		return nil, fmt.Errorf("relay ports %v are not a port range", cfg.RelayPorts)
	}
	var allow []netip.Prefix
	for _, p := range cfg.AllowPeers {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("allow_peers: %w", err)
		}
		allow = append(allow, pfx.Masked())
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	realm := opts.Realm
	if realm == "" {
		realm = DefaultRealm
	}
	secret := cfg.Secret
	if secret == "" {
		secret = randomSecret()
		log.Info("turn: no turn.secret set; using a random one, so credentials end with this process")
	}
	// config.Validate keeps both quotas at 1 or more; 0 here means no limit.
	userQuota, totalQuota := cfg.UserQuota, cfg.TotalQuota
	if userQuota <= 0 {
		userQuota = math.MaxInt
	}
	if totalQuota <= 0 {
		totalQuota = math.MaxInt
	}

	var public []netip.Addr
	for _, f := range []relayFamily{v4, v6} {
		if f.public.IsValid() {
			public = append(public, f.public)
		}
	}
	policy := newPeerPolicy(allow, public, uint16(cfg.RelayPorts.Min), uint16(cfg.RelayPorts.Max), opts.AllowPeerAddrs)
	s := &Server{
		log:     log,
		secret:  secret,
		now:     now,
		auth:    &restAuth{secret: secret, now: now},
		policy:  policy,
		relays:  newRelayAllocator(v4, v6, uint16(cfg.RelayPorts.Min), uint16(cfg.RelayPorts.Max), policy),
		quota:   newQuota(userQuota, totalQuota, now),
		tracker: newConnTracker(cmp.Or(opts.TCPIdleTimeout, tcpIdleTimeout)),
		drained: make(chan struct{}),
	}
	s.endpoint = Endpoint{Host: opts.PublicIPs[0].Unmap().String(), Port: listenersPort(ls)}

	permit := policy.permissionHandler(s.onPermissionDenied)
	pcfg := pionturn.ServerConfig{
		Realm:         realm,
		AuthHandler:   s.authHandler,
		QuotaHandler:  s.quotaHandler,
		EventHandler:  s.eventHandler(),
		LoggerFactory: loggerFactory{log: log, info: slog.LevelDebug},
		// Without an IPv6 relay, an Allocate that names no family gets an
		// IPv4 relay even from a client that came over IPv6 (RFC 6156);
		// pion's default would follow the client's family and fail.
		StrictAddressFamily: v4.public.IsValid() && !v6.public.IsValid(),
	}
	if s.plane, err = startDataPlane(ls.UDP, policy); err != nil {
		return nil, err
	}
	s.relays.plane = s.plane
	s.udp = newUDPGroups(ls.UDP)
	for _, g := range s.udp {
		for _, pc := range g.packetConns() {
			pcfg.PacketConnConfigs = append(pcfg.PacketConnConfigs, pionturn.PacketConnConfig{
				PacketConn: pc, RelayAddressGenerator: s.relays, PermissionHandler: permit,
			})
		}
	}
	if ls.TCP != nil {
		pcfg.ListenerConfigs = append(pcfg.ListenerConfigs, pionturn.ListenerConfig{
			Listener: newTrackingListener(ls.TCP, s.tracker, log), RelayAddressGenerator: s.relays, PermissionHandler: permit,
		})
	}
	if ls.TLS != nil {
		s.tlsL = newTLSListener(newTrackingListener(ls.TLS, s.tracker, log), opts.TLSConfig, log)
		s.endpoint.TLSPort = portOf(ls.TLS.Addr())
		pcfg.ListenerConfigs = append(pcfg.ListenerConfigs, pionturn.ListenerConfig{
			Listener: s.tlsL, RelayAddressGenerator: s.relays, PermissionHandler: permit,
		})
	}

	if ls.SharedTLS != nil {
		// Already TLS: the handshake was done by the listener's owner.
		s.endpoint.SharedTLSPort = portOf(ls.SharedTLS.Addr())
		pcfg.ListenerConfigs = append(pcfg.ListenerConfigs, pionturn.ListenerConfig{
			Listener: newTrackingListener(ls.SharedTLS, s.tracker, log), RelayAddressGenerator: s.relays, PermissionHandler: permit,
		})
	}

	s.pion, err = pionturn.NewServer(pcfg)
	if err != nil {
		if s.plane != nil {
			s.plane.close()
		}
		if s.tlsL != nil {
			s.tlsL.Close()
			s.tlsL.wait()
		}
		return nil, err
	}
	log.Info("turn: serving STUN/TURN",
		"udp", addrOf(ls.UDP), "udp_sockets", len(ls.UDP), "tcp", listenerAddr(ls.TCP), "tls", listenerAddr(ls.TLS), "tls_shared", listenerAddr(ls.SharedTLS),
		"public_ips", public, "relay_ports", cfg.RelayPorts.String(), "allow_peers", cfg.AllowPeers,
		"user_quota", cfg.UserQuota, "total_quota", cfg.TotalQuota)
	return s, nil
}

// Endpoint returns where clients reach this server: the first public IP and
// the listening ports. Endpoint.TLSHost is left empty.
func (s *Server) Endpoint() Endpoint { return s.endpoint }

// Stats returns a snapshot of the accounting.
func (s *Server) Stats() Stats {
	rc := s.relays.counts()
	return Stats{
		Allocations:       s.pion.AllocationCount(),
		AllocationsTotal:  s.counters.allocationsTotal.Load(),
		QuotaRefusals:     s.counters.quotaRefusals.Load(),
		AuthFailures:      s.counters.authFailures.Load(),
		Permissions:       max(0, s.counters.permissions.Load()),
		PermissionsTotal:  s.counters.permissionsTotal.Load(),
		PermissionsDenied: s.counters.permissionsDenied.Load(),
		Channels:          max(0, s.counters.channels.Load()),
		ChannelsTotal:     s.counters.channelsTotal.Load(),
		PacketsToPeers:    rc.packetsToPeers,
		BytesToPeers:      rc.bytesToPeers,
		PacketsFromPeers:  rc.packetsFromPeers,
		BytesFromPeers:    rc.bytesFromPeers,
		PacketsDenied:     rc.packetsDenied,
		TCPConnections:    s.tracker.count(),
	}
}

// Close stops the server: it closes the listening sockets, every TCP and TLS
// connection and every relay, and waits (a few seconds at most) until pion
// has released them all. Later calls return the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Server) close() error {
	s.closing.Store(true)
	// Relays first: an Allocate still in flight then fails instead of
	// creating an allocation after the others were counted out.
	s.relays.closeAll()
	var errs []error
	if err := s.pion.Close(); err != nil {
		errs = append(errs, err)
	}
	s.tracker.closeAll()
	if s.tlsL != nil {
		s.tlsL.wait()
	}
	if s.plane != nil {
		s.plane.close() // pion has closed every socket
	}
	s.checkDrained()

	conns := make(chan struct{})
	go func() {
		s.tracker.wg.Wait()
		close(conns)
	}()
	timeout := time.NewTimer(closeTimeout)
	defer timeout.Stop()
	for _, done := range []<-chan struct{}{conns, s.drained} {
		select {
		case <-done:
		case <-timeout.C:
			errs = append(errs, fmt.Errorf("turn: close: gave up waiting for %d allocations and %d connections",
				s.quota.allocations(), s.tracker.count()))
			return errors.Join(errs...)
		}
	}
	s.log.Debug("turn: closed")
	return errors.Join(errs...)
}

// checkDrained closes drained when the server is closing and no allocation
// is left.
func (s *Server) checkDrained() {
	if s.closing.Load() && s.quota.allocations() == 0 {
		s.drainOnce.Do(func() { close(s.drained) })
	}
}

// authHandler is pion's AuthHandler: it returns the key of a valid REST
// username; pion then checks the request's MESSAGE-INTEGRITY with it.
func (s *Server) authHandler(ra *pionturn.RequestAttributes) (string, []byte, bool) {
	userID, key, refusal := s.auth.key(ra.Username, ra.Realm)
	if refusal != "" {
		s.counters.authFailures.Add(1)
		s.log.Debug("turn: credential refused", "client", ra.SrcAddr, "username", ra.Username, "reason", string(refusal))
		return "", nil, false
	}
	return userID, key, true
}

// quotaHandler is pion's QuotaHandler; a refusal makes pion answer 486
// Allocation Quota Reached.
func (s *Server) quotaHandler(userID, _ string, src net.Addr) bool {
	if s.quota.reserve(userID, src) {
		return true
	}
	s.counters.quotaRefusals.Add(1)
	s.log.Debug("turn: allocation quota reached", "user", userID, "client", src)
	return false
}

func (s *Server) onPermissionDenied(client net.Addr, peer netip.Addr) {
	s.counters.permissionsDenied.Add(1)
	s.log.Debug("turn: peer refused by relay policy", "client", client, "peer", peer)
}

// eventHandler keeps the quota and the counters from pion's events. pion may
// call them with its locks held: they only touch counters and the quota.
func (s *Server) eventHandler() pionturn.EventHandler {
	return pionturn.EventHandler{
		OnAuth: func(src, _ net.Addr, _, username, _, method string, verdict bool) {
			if !verdict { // the key was found, the MESSAGE-INTEGRITY did not match
				s.counters.authFailures.Add(1)
				s.log.Debug("turn: wrong password", "client", src, "username", username, "method", method)
			}
		},
		OnAllocationCreated: func(src, _ net.Addr, protocol, userID, _ string, relay net.Addr, _ int) {
			s.quota.created(userID, src)
			for _, g := range s.udp {
				g.created(src)
			}
			s.counters.allocationsTotal.Add(1)
			s.log.Debug("turn: allocation created", "user", userID, "client", src, "transport", protocol, "relay", relay)
		},
		OnAllocationDeleted: func(src, _ net.Addr, _, userID, _ string) {
			s.quota.deleted(userID)
			for _, g := range s.udp {
				g.deleted(src)
			}
			s.log.Debug("turn: allocation deleted", "user", userID, "client", src)
			s.checkDrained()
		},
		OnAllocationError: func(src, _ net.Addr, _, _ string) {
			s.quota.failed(src)
			s.checkDrained()
		},
		OnPermissionCreated: func(src, _ net.Addr, _, userID, _ string, _ net.Addr, peer net.IP) {
			s.counters.permissions.Add(1)
			s.counters.permissionsTotal.Add(1)
			s.log.Debug("turn: permission created", "user", userID, "client", src, "peer", peer)
		},
		OnPermissionDeleted: func(_, _ net.Addr, _, _, _ string, _ net.Addr, _ net.IP) {
			s.counters.permissions.Add(-1)
		},
		OnChannelCreated: func(src, dst net.Addr, protocol, userID, _ string, relay, peer net.Addr, number uint16) {
			s.routeChannel(src, dst, protocol, relay, peer, number)
			s.counters.channels.Add(1)
			s.counters.channelsTotal.Add(1)
			s.log.Debug("turn: channel bound", "user", userID, "client", src, "peer", peer, "channel", number)
		},
		OnChannelDeleted: func(src, dst net.Addr, _, _, _ string, _, _ net.Addr, number uint16) {
			s.counters.channels.Add(-1)
			if s.plane != nil {
				if src, ok := addrPort(src); ok {
					if dst, ok := addrPort(dst); ok {
						s.plane.unbind(dst, src, number)
					}
				}
			}
		},
	}
}

// startDataPlane starts the data plane when the UDP sockets are its own
// (see useDataPlane), and gives it the listening sockets.
func startDataPlane(pcs []net.PacketConn, policy *peerPolicy) (*dataPlane, error) {
	var socks []*udpSock
	for _, pc := range pcs {
		if s, ok := pc.(*udpSock); ok {
			socks = append(socks, s)
		}
	}
	if len(socks) == 0 {
		return nil, nil
	}
	if len(socks) != len(pcs) {
		return nil, errors.New("turn: UDP sockets of two kinds")
	}
	p, err := newDataPlane(policy)
	if err != nil {
		return nil, fmt.Errorf("turn: %w", err)
	}
	for _, s := range socks {
		if err := p.add(s, listenSock, nil, netip.AddrPort{}); err != nil {
			p.close()
			return nil, fmt.Errorf("turn: %w", err)
		}
	}
	return p, nil
}

// routeChannel gives the data plane a channel binding pion made for a UDP
// client.
func (s *Server) routeChannel(src, dst net.Addr, protocol string, relay, peer net.Addr, number uint16) {
	if s.plane == nil || protocol != "UDP" {
		return
	}
	sock := s.relays.planeSock(relay)
	client, ok1 := addrPort(src)
	local, ok2 := addrPort(dst)
	to, ok3 := addrPort(peer)
	if sock == nil || !ok1 || !ok2 || !ok3 {
		return
	}
	s.plane.bind(local, client, number, sock, to)
}

// relayFamilies sorts the public and bind addresses by family.
func relayFamilies(public, bind []netip.Addr) (v4, v6 relayFamily, err error) {
	if len(public) == 0 {
		return v4, v6, errors.New("no public IP")
	}
	for _, ip := range public {
		ip = ip.Unmap()
		f := &v4
		if ip.Is6() {
			f = &v6
		}
		switch {
		case !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast():
			return v4, v6, fmt.Errorf("public IP %v cannot be reached by clients", ip)
		case f.public.IsValid():
			return v4, v6, fmt.Errorf("two public IPs of one family: %v and %v", f.public, ip)
		}
		f.public = ip
	}
	for _, ip := range bind {
		ip = ip.Unmap()
		f := &v4
		if ip.Is6() {
			f = &v6
		}
		if !f.public.IsValid() {
			return v4, v6, fmt.Errorf("relay bind IP %v has no public IP of its family", ip)
		}
		f.bind = ip
	}
	for _, f := range []*relayFamily{&v4, &v6} {
		if !f.public.IsValid() || f.bind.IsValid() {
			continue
		}
		if isLocalAddr(f.public) {
			f.bind = f.public
		} else if f.public.Is4() {
			f.bind = netip.IPv4Unspecified()
		} else {
			f.bind = netip.IPv6Unspecified()
		}
	}
	return v4, v6, nil
}

// isLocalAddr reports whether ip is an address of this host, by binding a
// UDP socket to it (and closing it at once; nothing is sent).
func isLocalAddr(ip netip.Addr) bool {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func listenersPort(ls *Listeners) int {
	switch {
	case len(ls.UDP) > 0:
		return portOf(ls.UDP[0].LocalAddr())
	case ls.TCP != nil:
		return portOf(ls.TCP.Addr())
	}
	return 0
}

func portOf(a net.Addr) int {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.Port
	case *net.TCPAddr:
		return a.Port
	}
	return 0
}

// addrOf lists the distinct addresses of the UDP sockets.
func addrOf(pcs []net.PacketConn) string {
	var addrs []string
	for _, pc := range pcs {
		if a := pc.LocalAddr().String(); !slices.Contains(addrs, a) {
			addrs = append(addrs, a)
		}
	}
	return strings.Join(addrs, " ")
}

func listenerAddr(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}
