package turn

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// DetectPublicIP returns the address of the interface that carries the
// default route: the address clients are told when --public-ip is not set.
// It never sends a packet. On Linux it reads the routing table from
// /proc/net/route (IPv4 first) and /proc/net/ipv6_route; elsewhere it asks
// the kernel which source address a UDP socket "connected" to a
// documentation address would use, which sends nothing either.
//
// Behind a NAT the result is a private address; the operator then has to set
// --public-ip.
func DetectPublicIP() (netip.Addr, error) {
	v4, err4 := routeFileAddr("/proc/net/route", parseRoute4, netip.Addr.Is4)
	if err4 == nil {
		return v4, nil
	}
	v6, err6 := routeFileAddr("/proc/net/ipv6_route", parseRoute6, netip.Addr.Is6)
	if err6 == nil {
		return v6, nil
	}
	if errors.Is(err4, os.ErrNotExist) && errors.Is(err6, os.ErrNotExist) {
		return connectedSourceAddr()
	}
	return netip.Addr{}, fmt.Errorf("detect public IP: %w", errors.Join(err4, err6))
}

// routeFileAddr finds the default route's interface in a /proc route file and
// returns that interface's first global unicast address of the family.
func routeFileAddr(path string, parse func(io.Reader) (string, error), family func(netip.Addr) bool) (netip.Addr, error) {
	f, err := os.Open(path)
	if err != nil {
		return netip.Addr{}, err
	}
	defer f.Close()
	ifname, err := parse(f)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s: %w", path, err)
	}
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("default route interface: %w", err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("addresses of %s: %w", ifname, err)
	}
	if a, ok := pickAddr(addrs, family); ok {
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("interface %s of the default route has no global address", ifname)
}

// pickAddr returns the first global unicast address of the family, preferring
// a public one over a private one.
func pickAddr(addrs []net.Addr, family func(netip.Addr) bool) (netip.Addr, bool) {
	var private netip.Addr
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		switch {
		case !family(ip) || !ip.IsGlobalUnicast():
		case !ip.IsPrivate():
			return ip, true
		case !private.IsValid():
			private = ip
		}
	}
	return private, private.IsValid()
}

var errNoDefaultRoute = errors.New("no default route")

// Route flags from <linux/route.h>.
const (
	rtfUp     = 0x0001
	rtfReject = 0x0200
)

// parseRoute4 returns the interface of the IPv4 default route with the lowest
// metric from the text of /proc/net/route:
//
//	Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT
//	eth0  00000000    010200C0 0003 0      0   0      00000000 ...
func parseRoute4(r io.Reader) (string, error) {
	best, bestMetric := "", uint64(0)
	sc := bufio.NewScanner(r)
	for first := true; sc.Scan(); first = false {
		f := strings.Fields(sc.Text())
		if first || len(f) < 8 {
			continue // header
		}
		flags, err1 := strconv.ParseUint(f[3], 16, 32)
		metric, err2 := strconv.ParseUint(f[6], 10, 32)
		if err1 != nil || err2 != nil || f[1] != "00000000" || f[7] != "00000000" ||
			flags&rtfUp == 0 || flags&rtfReject != 0 {
			continue
		}
		if best == "" || metric < bestMetric {
			best, bestMetric = f[0], metric
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if best == "" {
		return "", errNoDefaultRoute
	}
	return best, nil
}

// parseRoute6 returns the interface of the IPv6 default route with the lowest
// metric from the text of /proc/net/ipv6_route (no header):
//
//	dest prefixlen src srcprefixlen nexthop metric refcnt use flags iface
func parseRoute6(r io.Reader) (string, error) {
	best, bestMetric := "", uint64(0)
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		dest, err := hex.DecodeString(f[0])
		if err != nil || len(dest) != 16 || f[1] != "00" {
			continue
		}
		if d, _ := netip.AddrFromSlice(dest); !d.IsUnspecified() {
			continue
		}
		metric, err1 := strconv.ParseUint(f[5], 16, 32)
		flags, err2 := strconv.ParseUint(f[8], 16, 32)
		if err1 != nil || err2 != nil || f[9] == "lo" || flags&rtfUp == 0 || flags&rtfReject != 0 {
			continue
		}
		if best == "" || metric < bestMetric {
			best, bestMetric = f[9], metric
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	if best == "" {
		return "", errNoDefaultRoute
	}
	return best, nil
}

// connectedSourceAddr is the fallback where /proc is missing: connecting a UDP
// socket only selects the route and source address; no packet is sent.
// 192.0.2.1 (TEST-NET-1) is never a real host.
func connectedSourceAddr() (netip.Addr, error) {
	c, err := net.Dial("udp4", "192.0.2.1:9")
	if err != nil {
		return netip.Addr{}, fmt.Errorf("detect public IP: %w", err)
	}
	defer c.Close()
	ua, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok {
		return netip.Addr{}, errors.New("detect public IP: unexpected local address")
	}
	ip, _ := netip.AddrFromSlice(ua.IP)
	ip = ip.Unmap()
	if !ip.IsGlobalUnicast() {
		return netip.Addr{}, errors.New("detect public IP: no default route")
	}
	return ip, nil
}
