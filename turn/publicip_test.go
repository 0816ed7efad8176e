package turn

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRoute4(t *testing.T) {
	const table = `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	000200C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
wlan0	00000000	0101A8C0	0003	0	0	600	00000000	0	0	0
down0	00000000	0101A8C0	0002	0	0	0	00000000	0	0	0
rej0	00000000	00000000	0201	0	0	0	00000000	0	0	0
eth0	00000000	010200C0	0003	0	0	100	00000000	0	0	0
`
	got, err := parseRoute4(strings.NewReader(table))
	if err != nil || got != "eth0" {
		t.Errorf("parseRoute4 = %q, %v; want eth0 (lowest metric, up, not reject)", got, err)
	}
	_, err = parseRoute4(strings.NewReader("Iface\tDestination\neth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"))
	if !errors.Is(err, errNoDefaultRoute) {
		t.Errorf("without a default route: %v", err)
	}
}

func TestParseRoute6(t *testing.T) {
	const table = `fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000064 00000002 00000000 00000003     wlan0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
`
	got, err := parseRoute6(strings.NewReader(table))
	if err != nil || got != "wlan0" {
		t.Errorf("parseRoute6 = %q, %v; want wlan0 (metric 0x64 < 0x400)", got, err)
	}
	if _, err := parseRoute6(strings.NewReader(table[:strings.Index(table, "\n")+1])); !errors.Is(err, errNoDefaultRoute) {
		t.Errorf("without a default route: %v", err)
	}
}

// TestDetectPublicIP runs the detection on this machine: it reads the
// routing table and sends nothing.
func TestDetectPublicIP(t *testing.T) {
	ip, err := DetectPublicIP()
	if err != nil {
		// A machine without a default route has no address to detect; the
		// error must say so (the NAT lab's namespaces are such machines).
		if !strings.Contains(err.Error(), "no default route") {
			t.Fatalf("DetectPublicIP: %v", err)
		}
		t.Logf("no default route here: %v", err)
		return
	}
	if !ip.IsGlobalUnicast() {
		t.Errorf("DetectPublicIP = %v, not a global unicast address", ip)
	}
	t.Logf("detected %v", ip)
}
