package e2e

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// localRelaysJS lists the local relay candidates of the page's peer
// connections, each with the TURN URL it came from and how the browser
// reached that server.
const localRelaysJS = `(async () => {
	const out = [];
	for (const { pc } of window.parley.connections()) {
		(await pc.getStats()).forEach(r => {
			if (r.type === 'local-candidate' && r.candidateType === 'relay') out.push({ relayProtocol: r.relayProtocol || '', url: r.url || '' });
		});
	}
	return out;
})()`

// TestNATLabOnlyHTTPSPortOut: Alice's network lets out only TCP to the
// server's HTTPS port, as a strict corporate firewall does. Parley serves
// HTTPS on 443 and TURN over TLS on the same port, so her browser still gets
// a relay there and the call connects.
//
// The certificate is self-signed, so both browsers run with
// --ignore-certificate-errors. That flag covers Chromium's TURN-over-TLS
// client too, which checks certificates on its own: with the page's errors
// ignored through DevTools instead (Security.setIgnoreCertificateErrors),
// the page loads but every TURN-over-TLS handshake ends in the browser's
// "unknown certificate" alert and no TLS relay is gathered.
func TestNATLabOnlyHTTPSPortOut(t *testing.T) {
	lab := newNATLab(t, natLabOptions{
		serverArgs: []string{
			"--listen", labServerIP + ":443",
			"--tls-self-signed", "--data-dir", t.TempDir(),
			"--http-redirect-listen", "",
		},
		httpsOnlyA:   true,
		browserFlags: []chromedp.ExecAllocatorOption{chromedp.Flag("ignore-certificate-errors", true)},
	})
	lab.join()
	expectVideoFrom(lab.alice, "Bob")
	expectVideoFrom(lab.bob, "Alice")

	alice, bob := selectedPair(lab.alice), selectedPair(lab.bob)
	var sum iceSummary
	lab.alice.value(iceSummaryJS, &sum)
	var relays []struct{ RelayProtocol, URL string }
	lab.alice.value(localRelaysJS, &relays)
	t.Logf("alice (only TCP 443 out): selected pair: %v via %s\n%v\nrelays %+v", alice, alice.Local.URL, sum, relays)
	t.Logf("bob: selected pair: %v", bob)

	if alice.Local.Type != "relay" || alice.Local.RelayProtocol != "tls" || !strings.Contains(alice.Local.URL, ":443") {
		t.Errorf("alice: selected local candidate is %v from %q, want a relay reached over TLS on port 443", alice.Local, alice.Local.URL)
	}
	// Controls: the firewall held. STUN over UDP would have given a srflx
	// candidate, TURN over UDP a udp relay; TURN over TCP 3478 or TLS 5349
	// a relay from another URL.
	if has(sum.Local, "srflx") || has(sum.Local, "relay/udp/udp") {
		t.Errorf("alice reached STUN/TURN over UDP, which her network drops: %v", sum)
	}
	for _, r := range relays {
		if r.RelayProtocol != "tls" || !strings.Contains(r.URL, ":443?") {
			t.Errorf("alice has a relay over %s from %s; her network lets out only TCP to port 443", r.RelayProtocol, r.URL)
		}
	}
	expectRelayToRelay(lab.alice, alice)
	expectRelayToRelay(lab.bob, bob)
}
