package turn

import (
	"net"
	"net/netip"
	"testing"
)

func TestPolicyDefault(t *testing.T) {
	p := newPeerPolicy(nil, nil, 49152, 65535, nil)
	tests := []struct {
		ip    string
		allow bool
	}{
		// Public unicast.
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"93.184.216.34", true},
		{"2606:4700:4700::1111", true},
		{"2a00:1450:4001:80b::200e", true},
		{"::ffff:8.8.8.8", true},
		// Edges of denied ranges.
		{"9.255.255.255", true},
		{"11.0.0.0", true},
		{"100.63.255.255", true},
		{"100.128.0.0", true},
		{"172.15.255.255", true},
		{"172.32.0.0", true},
		{"192.0.1.255", true},
		{"192.0.3.0", true},
		{"198.17.255.255", true},
		{"198.20.0.0", true},
		{"223.255.255.255", true},
		{"2001:200::1", true}, // first allocated range after 2001::/23
		{"2001:db7:ffff::1", true},
		{"2001:db9::1", true},
		{"2003::1", true},
		{"3ffe::1", true},

		// "This network", unspecified.
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"::", false},
		// Loopback.
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"::1", false},
		{"::ffff:127.0.0.1", false},
		// RFC 1918.
		{"10.0.0.1", false},
		{"10.255.255.255", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.168.0.1", false},
		{"::ffff:192.168.1.1", false},
		// CGNAT.
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		// Link-local and metadata.
		{"169.254.169.254", false},
		{"169.254.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"fe80::1", false},
		{"febf::1", false},
		// Multicast and broadcast.
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"255.255.255.255", false},
		{"ff02::1", false},
		{"ff0e::1", false},
		// Reserved.
		{"240.0.0.1", false},
		{"250.1.2.3", false},
		// Documentation and benchmarking.
		{"192.0.2.1", false},
		{"198.51.100.7", false},
		{"203.0.113.99", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"2001:db8::1", false},
		{"2001:db8:ffff::1", false},
		{"3fff::1", false},
		// IETF protocol assignments, 6to4 relay.
		{"192.0.0.1", false},
		{"192.0.0.170", false},
		{"192.88.99.1", false},
		// IPv6 special ranges.
		{"fc00::1", false},
		{"fd00::2", false},
		{"64:ff9b::7f00:1", false},
		{"64:ff9b::808:808", false},
		{"64:ff9b:1::1", false},
		{"2001::1", false},             // Teredo
		{"2001:0:4136:e378::1", false}, // Teredo
		{"2001:2::1", false},           // benchmarking
		{"2001:10::1", false},          // ORCHID
		{"2002:7f00:1::1", false},      // 6to4 of 127.0.0.1
		{"2002:808:808::1", false},     // 6to4 of a public address: still refused
		{"::7f00:1", false},            // IPv4-compatible
		{"::ffff:0:7f00:1", false},     // SIIT
		{"100::1", false},              // discard-only
		{"5f00::1", false},             // SRv6
		{"4000::1", false},             // outside 2000::/3
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			if got := p.permit(ip); got != tt.allow {
				t.Errorf("permit(%v) = %v, want %v", ip, got, tt.allow)
			}
			// pion hands the handler a net.IP, sometimes in 16-byte form.
			h := p.permissionHandler(func(net.Addr, netip.Addr) {})
			if got := h(nil, net.IP(ip.AsSlice())); got != tt.allow {
				t.Errorf("handler(%v) = %v, want %v", ip, got, tt.allow)
			}
			if ip.Is4() {
				if got := h(nil, net.IP(ip.AsSlice()).To16()); got != tt.allow {
					t.Errorf("handler(16-byte %v) = %v, want %v", ip, got, tt.allow)
				}
			}
			// Without guarded addresses every packet of a permitted peer passes.
			if !p.permitPacket(netip.AddrPortFrom(ip, 1234)) {
				t.Errorf("permitPacket(%v) = false without guarded addresses", ip)
			}
		})
	}
	if p.permit(netip.Addr{}) {
		t.Error("the zero Addr is permitted")
	}
	if h := p.permissionHandler(func(net.Addr, netip.Addr) {}); h(nil, net.IP{1, 2, 3}) {
		t.Error("a 3-byte IP is permitted")
	}
}

func TestPolicyAllowAndOwn(t *testing.T) {
	own := netip.MustParseAddr("192.168.1.10") // a LAN install: private public IP
	sfu := netip.MustParseAddrPort("192.168.1.10:7882")
	p := newPeerPolicy(
		[]netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1::/64")},
		[]netip.Addr{own, netip.MustParseAddr("2001:4860::1")},
		49152, 65535,
		[]netip.AddrPort{sfu, netip.MustParseAddrPort("[::1]:7882")},
	)
	permits := []struct {
		ip    string
		allow bool
	}{
		{"10.1.2.3", true},            // allow-listed
		{"::ffff:10.1.2.3", true},     // allow-listed, mapped
		{"10.2.0.1", false},           // outside the allow-list
		{"fd00:1::5", true},           // allow-listed IPv6
		{"fd00:2::5", false},          //
		{"192.168.1.10", true},        // own address, ports checked per packet
		{"::ffff:192.168.1.10", true}, //
		{"192.168.1.11", false},       //
		{"::1", true},                 // exact entry's IP
		{"127.0.0.1", false},          //
		{"2001:4860::1", true},        // own public IPv6
	}
	for _, tt := range permits {
		if got := p.permit(netip.MustParseAddr(tt.ip)); got != tt.allow {
			t.Errorf("permit(%s) = %v, want %v", tt.ip, got, tt.allow)
		}
	}
	packets := []struct {
		dst   string
		allow bool
	}{
		{"192.168.1.10:49152", true},          // relay port
		{"192.168.1.10:65535", true},          //
		{"[::ffff:192.168.1.10]:50000", true}, //
		{"192.168.1.10:7882", true},           // the SFU
		{"192.168.1.10:22", false},            // anything else on the server
		{"192.168.1.10:49151", false},         //
		{"192.168.1.10:8080", false},          //
		{"[::1]:7882", true},                  // exact entry
		{"[::1]:7883", false},                 //
		{"[2001:4860::1]:50000", true},        // own public IPv6, relay port
		{"[2001:4860::1]:53", false},          //
		{"10.1.2.3:22", true},                 // allow-listed: every port
		{"8.8.8.8:53", true},                  // not guarded
	}
	for _, tt := range packets {
		if got := p.permitPacket(netip.MustParseAddrPort(tt.dst)); got != tt.allow {
			t.Errorf("permitPacket(%s) = %v, want %v", tt.dst, got, tt.allow)
		}
	}

	// An own address inside the allow-list is not guarded: every port.
	p = newPeerPolicy([]netip.Prefix{netip.MustParsePrefix("192.168.1.0/24")}, []netip.Addr{own}, 49152, 65535, nil)
	if !p.permitPacket(netip.MustParseAddrPort("192.168.1.10:22")) {
		t.Error("allow-listed own address is port-restricted")
	}
	// A public exact entry is not guarded either.
	p = newPeerPolicy(nil, nil, 49152, 65535, []netip.AddrPort{netip.MustParseAddrPort("8.8.4.4:7882")})
	if !p.permitPacket(netip.MustParseAddrPort("8.8.4.4:53")) {
		t.Error("public exact entry is port-restricted")
	}
}

// FuzzPolicy: the policy never panics and treats an IPv4 address and its
// IPv4-mapped IPv6 form alike.
func FuzzPolicy(f *testing.F) {
	f.Add([]byte{127, 0, 0, 1}, uint16(80))
	f.Add(netip.MustParseAddr("::ffff:10.0.0.1").AsSlice(), uint16(5000))
	f.Add(netip.MustParseAddr("2001:db8::1").AsSlice(), uint16(0))
	p := newPeerPolicy([]netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}, []netip.Addr{netip.MustParseAddr("192.168.0.1")},
		50000, 50100, []netip.AddrPort{netip.MustParseAddrPort("192.168.0.1:7882")})
	h := p.permissionHandler(func(net.Addr, netip.Addr) {})
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		got := h(nil, net.IP(b))
		ip, ok := netip.AddrFromSlice(b)
		if !ok {
			if got {
				t.Fatalf("invalid IP %x permitted", b)
			}
			return
		}
		if p.permit(ip) != p.permit(ip.Unmap()) {
			t.Fatalf("%v and %v differ", ip, ip.Unmap())
		}
		if ip.Is4() {
			mapped := netip.AddrFrom16(ip.As16())
			if p.permit(mapped) != got {
				t.Fatalf("%v and %v differ", ip, mapped)
			}
		}
		ap := netip.AddrPortFrom(ip, port)
		if p.permitPacket(ap) != p.permitPacket(netip.AddrPortFrom(ip.Unmap(), port)) {
			t.Fatalf("packets to %v and its unmapped form differ", ap)
		}
	})
}
