package turn

import (
	"net"
	"net/netip"
)

// The relay policy keeps the TURN server from being a door into networks that
// only the server can reach: a client could otherwise ask the relay to send to
// 127.0.0.1, to the cloud metadata service at 169.254.169.254 or to the
// operator's LAN. Peers are checked when a permission or a channel is
// requested (pion asks permit), and packets to the server's own addresses are
// checked again per packet (permitPacket), because a permission covers every
// port of an address.

// deniedPrefixes are the special-purpose ranges no peer may be in unless
// allow-listed. IPv4-mapped IPv6 addresses are unmapped before the check, so
// ::ffff:127.0.0.1 meets 127.0.0.0/8. Sources: the IANA IPv4 and IPv6
// Special-Purpose Address Registries.
var deniedPrefixes = []netip.Prefix{
	// IPv4
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network", includes 0.0.0.0
	netip.MustParsePrefix("10.0.0.0/8"),      // private (RFC 1918)
	netip.MustParsePrefix("100.64.0.0/10"),   // shared address space, CGNAT (RFC 6598)
	netip.MustParsePrefix("127.0.0.0/8"),     // loopback
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local, cloud metadata services
	netip.MustParsePrefix("172.16.0.0/12"),   // private (RFC 1918)
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments (DS-Lite, NAT64 discovery, ...)
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // 6to4 relay anycast (deprecated)
	netip.MustParsePrefix("192.168.0.0/16"),  // private (RFC 1918)
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // documentation TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation TEST-NET-3
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, includes the broadcast 255.255.255.255

	// IPv6. Everything outside 2000::/3 is refused by permit before this list
	// is consulted (loopback, unspecified, IPv4-compatible, NAT64, discard-only,
	// ULA fc00::/7, link-local fe80::/10, multicast ff00::/8); the NAT64 ranges
	// are listed anyway so that the list reads as the policy.
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64 well-known prefix: reaches IPv4 behind a translator
	netip.MustParsePrefix("64:ff9b:1::/48"), // NAT64 local-use prefix
	netip.MustParsePrefix("2001::/23"),      // IETF protocol assignments: Teredo 2001::/32, benchmarking, ORCHID
	netip.MustParsePrefix("2001:db8::/32"),  // documentation
	netip.MustParsePrefix("2002::/16"),      // 6to4: embeds an IPv4 address that may be private
	netip.MustParsePrefix("3fff::/20"),      // documentation (RFC 9637)
	netip.MustParsePrefix("5f00::/16"),      // SRv6 SIDs (RFC 9602)
}

// globalUnicast6 is the only IPv6 space allocated for global unicast.
var globalUnicast6 = netip.MustParsePrefix("2000::/3")

// peerPolicy decides which peers a client may relay to. Static after
// construction; safe for concurrent use.
type peerPolicy struct {
	// allow are CIDRs exempt from the deny-list (turn.allow_peers).
	allow []netip.Prefix
	// own are the server's public relay addresses. Clients may reach them, so
	// that two clients of this server can relay to each other, but only on
	// relay ports: anything else listening on the server's own address stays
	// out of reach.
	own []netip.Addr
	// relayMin and relayMax bound the relay ports reachable on own addresses.
	relayMin, relayMax uint16
	// exact are single addresses that are always allowed (the SFU's media
	// port). Their IP is allowed for permissions, their port per packet.
	exact []netip.AddrPort
	// guarded are the addresses whose packets permitPacket checks port by
	// port: own addresses and the IPs of exact entries that the deny-list
	// would refuse, minus those covered by allow.
	guarded []netip.Addr
}

// newPeerPolicy builds the policy; own and exact addresses are unmapped.
func newPeerPolicy(allow []netip.Prefix, own []netip.Addr, relayMin, relayMax uint16, exact []netip.AddrPort) *peerPolicy {
	p := &peerPolicy{allow: allow, relayMin: relayMin, relayMax: relayMax}
	for _, a := range own {
		p.own = append(p.own, a.Unmap())
	}
	for _, ap := range exact {
		p.exact = append(p.exact, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	addGuard := func(a netip.Addr) {
		if p.allowed(a) {
			return
		}
		for _, g := range p.guarded {
			if g == a {
				return
			}
		}
		p.guarded = append(p.guarded, a)
	}
	for _, a := range p.own {
		addGuard(a)
	}
	for _, ap := range p.exact {
		if denied(ap.Addr()) {
			addGuard(ap.Addr())
		}
	}
	return p
}

// permit reports whether a client may have a permission (or channel) for ip.
func (p *peerPolicy) permit(ip netip.Addr) bool {
	ip = ip.Unmap()
	if !ip.IsValid() {
		return false
	}
	if p.allowed(ip) {
		return true
	}
	for _, g := range p.guarded {
		if g == ip {
			return true // ports are checked per packet
		}
	}
	return !denied(ip)
}

// permitPacket reports whether a relayed packet may go to dst. Permissions
// were already checked by permit; this only restricts the guarded addresses
// to relay ports and exact entries.
func (p *peerPolicy) permitPacket(dst netip.AddrPort) bool {
	if len(p.guarded) == 0 {
		return true
	}
	ip := dst.Addr().Unmap()
	guarded := false
	for _, g := range p.guarded {
		if g == ip {
			guarded = true
			break
		}
	}
	if !guarded {
		return true
	}
	for _, ap := range p.exact {
		if ap.Addr() == ip && ap.Port() == dst.Port() {
			return true
		}
	}
	for _, o := range p.own {
		if o == ip {
			return dst.Port() >= p.relayMin && dst.Port() <= p.relayMax
		}
	}
	return false
}

// allowed reports whether ip is in an allow-listed CIDR.
func (p *peerPolicy) allowed(ip netip.Addr) bool {
	for _, pfx := range p.allow {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// denied reports whether ip (already unmapped) is in a special-purpose range.
func denied(ip netip.Addr) bool {
	if ip.Is6() && !globalUnicast6.Contains(ip) {
		return true
	}
	for _, pfx := range deniedPrefixes {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// permissionHandler adapts the policy to pion's PermissionHandler, which is
// asked for CreatePermission, ChannelBind and Connect requests.
func (p *peerPolicy) permissionHandler(onDeny func(client net.Addr, peer netip.Addr)) func(net.Addr, net.IP) bool {
	return func(client net.Addr, peerIP net.IP) bool {
		ip, ok := netip.AddrFromSlice(peerIP)
		if ok && p.permit(ip) {
			return true
		}
		onDeny(client, ip)
		return false
	}
}
