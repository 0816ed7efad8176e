package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The NAT lab: the Parley server on a "public" network and two participants,
// each in a home LAN behind its own symmetric NAT.
//
//	               pub 203.0.113.10 (parley)
//	                    │ 203.0.113.0/24
//	               inet 203.0.113.1 (router)
//	     198.51.100.1 ╱                ╲ 198.51.100.5
//	natA 198.51.100.2                    natB 198.51.100.6
//	     192.168.1.1                          192.168.1.1
//	lanA 192.168.1.10 (Chromium)         lanB 192.168.1.20 (Chromium)
//
// inet routes between all public addresses, so a packet from one NAT to the
// other arrives and only the NATs' own filtering stops it. The server is a
// plain host with one interface that carries its public address and the
// default route, as on a rented server. Both homes use the same private
// subnet, as real homes do. The public addresses are in documentation
// ranges, which Parley's relay policy refuses as peers: the only relay path
// left is relay to relay, through the server's own public address, which the
// policy always allows on relay ports.
const (
	labServerIP = "203.0.113.10"
	labLANNet   = "192.168.1.%d/24"
)

// natLabOptions shape the lab.
type natLabOptions struct {
	serverArgs []string // extra parley flags; a --listen here wins over the lab's
	blockUDPA  bool     // natA drops every UDP packet from lanA
	httpsOnlyA bool     // natA lets out of lanA only TCP to the server's port 443
	initJS     string   // runs in both pages before the page's own scripts
	mode       string   // room mode; "" is the server's default (p2p)
	// browserFlags are extra Chromium options for both browsers.
	browserFlags []chromedp.ExecAllocatorOption
}

// egress is what a home router lets out of its LAN.
type egress int

const (
	egressAll       egress = iota // everything, as a home router does
	egressNoUDP                   // no UDP at all
	egressHTTPSOnly               // only TCP to the server's port 443, as a strict corporate firewall
)

// natLab is a built lab with one participant on each side, both on the
// page of the same room (not yet joined).
type natLab struct {
	alice, bob *page // alice in lanA, bob in lanB
	room       string
}

// newNATLab builds the namespaces, starts parley in the server's namespace
// and one Chromium in each LAN, and opens a room. Everything is torn down
// when the test ends, whether it passed or not.
func newNATLab(t *testing.T, o natLabOptions) *natLab {
	t.Helper()
	inet, pub := newNetns(t), newNetns(t)
	inet.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	link(t, inet, "203.0.113.1/24", pub, labServerIP+"/24")
	pub.run(t, "ip", "route", "add", "default", "via", "203.0.113.1")

	outA := egressAll
	switch {
	case o.httpsOnlyA:
		outA = egressHTTPSOnly
	case o.blockUDPA:
		outA = egressNoUDP
	}
	lanA := homeNetwork(t, inet, 0, 10, outA)
	lanB := homeNetwork(t, inet, 4, 20, egressAll)

	args := append([]string{
		"--listen", labServerIP + ":8080",
		"--public-ip", labServerIP,
	}, o.serverArgs...)
	srv := startServer(t, pub, args...)
	// The page is served over plain HTTP from a non-local address, which is no
	// secure context: without this flag there is no getUserMedia.
	flags := append([]chromedp.ExecAllocatorOption{
		chromedp.Flag("unsafely-treat-insecure-origin-as-secure", srv.url),
	}, o.browserFlags...)
	alice := newBrowser(t, lanA, flags...).newPage(t, "alice")
	bob := newBrowser(t, lanB, flags...).newPage(t, "bob")
	if o.initJS != "" {
		alice.addInitScript(o.initJS)
		bob.addInitScript(o.initJS)
	}
	room := newRoom
	if o.mode != "" {
		room = func(p *page, base string) string { return newRoomWithMode(p, base, o.mode) }
	}
	return &natLab{alice: alice, bob: bob, room: room(alice, srv.url)}
}

// homeNetwork builds a NAT router linked to inet by the /30 at
// 198.51.100.<subnet> and a LAN host at 192.168.1.<host> behind it, and
// returns the host's namespace. The router does what a home router does:
// symmetric NAT (a new random public port for every destination), and no
// packet from outside gets in unless it answers one that went out. out
// limits what the LAN may send.
func homeNetwork(t *testing.T, inet *netns, subnet, host int, out egress) *netns {
	t.Helper()
	nat, lan := newNetns(t), newNetns(t)
	gateway, natIP := fmt.Sprintf("198.51.100.%d", subnet+1), fmt.Sprintf("198.51.100.%d", subnet+2)
	_, wan := link(t, inet, gateway+"/30", nat, natIP+"/30")
	lanIf, _ := link(t, nat, fmt.Sprintf(labLANNet, 1), lan, fmt.Sprintf(labLANNet, host))

	nat.run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	nat.run(t, "ip", "route", "add", "default", "via", gateway)
	nat.run(t, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", wan, "-j", "MASQUERADE", "--random-fully")
	for _, chain := range []string{"FORWARD", "INPUT"} {
		nat.run(t, "iptables", "-A", chain, "-i", wan, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		nat.run(t, "iptables", "-A", chain, "-i", wan, "-j", "DROP")
	}
	switch out {
	case egressNoUDP:
		nat.run(t, "iptables", "-A", "FORWARD", "-i", lanIf, "-p", "udp", "-j", "DROP")
	case egressHTTPSOnly:
		// Answers to what went out, and new TCP connections to the
		// server's port 443; nothing else: no DNS, no UDP, no TCP to
		// STUN/TURN's 3478 or 5349, no SFU ports.
		nat.run(t, "iptables", "-A", "FORWARD", "-i", lanIf, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		nat.run(t, "iptables", "-A", "FORWARD", "-i", lanIf, "-p", "tcp", "-d", labServerIP, "--dport", "443", "-j", "ACCEPT")
		nat.run(t, "iptables", "-A", "FORWARD", "-i", lanIf, "-j", "DROP")
	}
	lan.run(t, "ip", "route", "add", "default", "via", "192.168.1.1")
	return lan
}

// join puts both participants in the room.
func (l *natLab) join() {
	join(l.alice, l.room, "Alice")
	join(l.bob, l.room, "Bob")
}

// iceCandidate is a local or remote candidate from getStats.
type iceCandidate struct {
	Type          string // host, srflx, prflx or relay
	Protocol      string // udp or tcp: between the candidate and the other side
	RelayProtocol string // udp, tcp or tls: between the browser and TURN (local relay only)
	Address       string
	Port          int
	URL           string // the STUN/TURN URL a local srflx or relay came from
}

func (c iceCandidate) String() string {
	s := fmt.Sprintf("%s %s %s:%d", c.Type, c.Protocol, c.Address, c.Port)
	if c.RelayProtocol != "" {
		s += " (to TURN over " + c.RelayProtocol + ")"
	}
	return s
}

// candidatePair is the selected candidate pair of a peer connection.
type candidatePair struct {
	Local, Remote iceCandidate
	State         string
}

func (p candidatePair) String() string {
	return fmt.Sprintf("local %v <-> remote %v [%s]", p.Local, p.Remote, p.State)
}

// selectedPairJS resolves to the selected candidate pair of the page's
// first peer connection (the transport's selectedCandidatePairId, else the
// nominated succeeded pair), or null while there is none.
const selectedPairJS = `(async () => {
	const conns = window.parley.connections();
	if (conns.length === 0) return null;
	const stats = await conns[0].pc.getStats();
	let pair = null;
	stats.forEach(r => { if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId) || pair; });
	if (!pair) stats.forEach(r => { if (!pair && r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
	if (!pair) return null;
	const cand = c => c ? { type: c.candidateType, protocol: c.protocol, relayProtocol: c.relayProtocol || '',
		address: c.address || c.ip || '', port: c.port, url: c.url || '' } : {};
	return { local: cand(stats.get(pair.localCandidateId)), remote: cand(stats.get(pair.remoteCandidateId)), state: pair.state };
})()`

// selectedPair waits (10 s at most) for the page's selected candidate pair.
func selectedPair(p *page) candidatePair {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pair *candidatePair
		p.value(selectedPairJS, &pair)
		if pair != nil {
			return *pair
		}
		if time.Now().After(deadline) {
			state, _ := evalJS[string](p, "debugState()")
			p.t.Fatalf("%s: no selected candidate pair; page state: %s", p.name, state)
		}
		time.Sleep(200 * time.Millisecond) // polling interval of getStats
	}
}

// iceSummaryJS counts, over the page's peer connections, the local
// candidates by type/protocol[/relay protocol], the remote ones by
// type/protocol, and the candidate pairs by "local type->remote type:state".
const iceSummaryJS = `(async () => {
	const out = { local: {}, remote: {}, pairs: {} };
	const add = (m, k) => { m[k] = (m[k] || 0) + 1; };
	for (const { pc } of window.parley.connections()) {
		const stats = await pc.getStats();
		stats.forEach(r => {
			if (r.type === 'local-candidate') add(out.local, r.candidateType + '/' + r.protocol + (r.relayProtocol ? '/' + r.relayProtocol : ''));
			if (r.type === 'remote-candidate') add(out.remote, r.candidateType + '/' + r.protocol);
			if (r.type === 'candidate-pair') {
				const l = stats.get(r.localCandidateId) || {}, m = stats.get(r.remoteCandidateId) || {};
				add(out.pairs, l.candidateType + '->' + m.candidateType + ':' + r.state);
			}
		});
	}
	return out;
})()`

// iceSummary is the decoded value of iceSummaryJS.
type iceSummary struct {
	Local, Remote, Pairs map[string]int
}

func (s iceSummary) String() string {
	return fmt.Sprintf("local candidates %s; remote candidates %s; pairs %s", counts(s.Local), counts(s.Remote), counts(s.Pairs))
}

// has reports whether some key of m starts with prefix.
func has(m map[string]int, prefix string) bool {
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// counts formats m sorted by key, for logs.
func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s×%d", k, m[k])
	}
	b.WriteString("}")
	return b.String()
}

// expectRelayToRelay checks that a page's selected pair runs from its own
// relay to the other side's relay, both on the server's public address. The
// lab leaves no other path: the NATs drop what the other side sends to their
// public addresses, and the relay policy refuses those addresses (and the
// private ones) as peers. So the call working proves the server granted each
// relay a permission for its own public address, and relayed between its own
// relay ports.
func expectRelayToRelay(p *page, pair candidatePair) {
	p.t.Helper()
	// The other relay shows as prflx when its checks came in before its
	// candidate did.
	remoteRelay := pair.Remote.Type == "relay" || pair.Remote.Type == "prflx"
	if pair.Local.Type != "relay" || !remoteRelay || pair.Local.Address != labServerIP || pair.Remote.Address != labServerIP {
		p.t.Errorf("%s: selected pair is %v, want relay to relay on %s", p.name, pair, labServerIP)
	}
}

// TestNATLabCallThroughTURN: two people behind separate symmetric NATs talk
// through Parley's built-in TURN server, relay to relay.
func TestNATLabCallThroughTURN(t *testing.T) {
	lab := newNATLab(t, natLabOptions{})
	lab.join()
	expectVideoFrom(lab.alice, "Bob")
	expectVideoFrom(lab.bob, "Alice")

	for _, p := range []*page{lab.alice, lab.bob} {
		pair := selectedPair(p)
		var sum iceSummary
		p.value(iceSummaryJS, &sum)
		t.Logf("%s: selected pair: %v\n%v", p.name, pair, sum)
		expectRelayToRelay(p, pair)
	}
}

// TestNATLabSFUWithoutTURN: in an SFU room each browser only needs a path to
// the server's public address, which a symmetric NAT allows, so the call works
// with the built-in TURN turned off.
func TestNATLabSFUWithoutTURN(t *testing.T) {
	lab := newNATLab(t, natLabOptions{serverArgs: []string{"--turn=false"}, mode: "sfu"})
	lab.join()
	expectVideoFrom(lab.alice, "Bob")
	expectVideoFrom(lab.bob, "Alice")
	for _, p := range []*page{lab.alice, lab.bob} {
		pair := selectedPair(p)
		t.Logf("%s: selected pair: %v", p.name, pair)
		if pair.Remote.Address != labServerIP || pair.Local.Type == "relay" {
			t.Fatalf("%s: selected pair %v, want a direct path to the server's public address %s", p.name, pair, labServerIP)
		}
	}
}

// recordICEJS records every state of every RTCPeerConnection the page makes
// (window.__ice), so a test can tell that a connection was never connected,
// not even for a moment. With window.__stunOnly set first, it also drops
// the turn: and turns: URLs from the configuration: STUN still works, so the
// browsers learn their NAT's public address, but there is no relay.
const recordICEJS = `(() => {
	const PC = window.RTCPeerConnection;
	const rec = window.__ice = { states: [], started: false, connected: false };
	window.RTCPeerConnection = class extends PC {
		constructor(cfg, ...rest) {
			if (window.__stunOnly && cfg && Array.isArray(cfg.iceServers)) {
				cfg = { ...cfg, iceServers: cfg.iceServers
					.map(s => ({ ...s, urls: [].concat(s.urls).filter(u => u.startsWith('stun:')) }))
					.filter(s => s.urls.length > 0) };
			}
			super(cfg, ...rest);
			const note = () => {
				const s = this.connectionState + '/' + this.iceConnectionState;
				if (rec.states[rec.states.length - 1] !== s) rec.states.push(s);
				if (this.iceConnectionState !== 'new') rec.started = true;
				if (this.connectionState === 'connected' || this.iceConnectionState === 'connected' ||
					this.iceConnectionState === 'completed') rec.connected = true;
			};
			this.addEventListener('connectionstatechange', note);
			this.addEventListener('iceconnectionstatechange', note);
		}
	};
})();`

// TestNATLabWithoutTURNDoesNotConnect shows that the NATs really block
// every direct path: without TURN the call never connects. Once with the
// built-in STUN/TURN server off (browsers have host candidates only), and
// once with STUN but no relay (browsers also learn their public addresses,
// which a symmetric NAT does not let the other side use).
func TestNATLabWithoutTURNDoesNotConnect(t *testing.T) {
	const observe = 10 * time.Second // through a port-preserving NAT, Chromium connects within 2 s
	for _, tc := range []struct {
		name       string
		serverArgs []string
		stunOnly   bool
	}{
		{name: "turn-off", serverArgs: []string{"--turn=false"}},
		{name: "stun-only", stunOnly: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			initJS := recordICEJS
			if tc.stunOnly {
				initJS = "window.__stunOnly = true;\n" + initJS
			}
			lab := newNATLab(t, natLabOptions{serverArgs: tc.serverArgs, initJS: initJS})
			lab.join()
			pages := []*page{lab.alice, lab.bob}
			for _, p := range pages {
				p.waitFor(`window.parley.connections().length === 1 && window.parley.connections()[0].pc.remoteDescription && window.__ice.started`, 20*time.Second)
			}
			deadline := time.Now().Add(observe)
			for time.Now().Before(deadline) {
				for _, p := range pages {
					var connected bool
					p.value("window.__ice.connected", &connected)
					if connected {
						var states []string
						p.value("window.__ice.states", &states)
						t.Fatalf("%s: the call connected without TURN (states %v): the NATs let a direct path through", p.name, states)
					}
				}
				time.Sleep(500 * time.Millisecond) // sampling interval of the states
			}
			for _, p := range pages {
				var states []string
				p.value("window.__ice.states", &states)
				var sum iceSummary
				p.value(iceSummaryJS, &sum)
				t.Logf("%s: not connected after %v; connection/ICE states %v; %v", p.name, observe, states, sum)
				if hasState(sum.Pairs, "succeeded") {
					t.Errorf("%s: a candidate pair succeeded: %v", p.name, sum)
				}
				if tc.stunOnly && (!has(sum.Local, "srflx") || !has(sum.Remote, "srflx")) {
					t.Errorf("%s: with STUN on, want server-reflexive candidates on both sides (so the direct path through the NATs was tried): %v", p.name, sum)
				}
			}
		})
	}
}

// hasState reports whether some pair key of m ends in ":"+state.
func hasState(m map[string]int, state string) bool {
	for k := range m {
		if strings.HasSuffix(k, ":"+state) {
			return true
		}
	}
	return false
}

// TestNATLabUDPBlockedUsesTURNTCP: Alice's network drops all outbound UDP,
// so her browser reaches TURN over TCP; the call still connects.
func TestNATLabUDPBlockedUsesTURNTCP(t *testing.T) {
	lab := newNATLab(t, natLabOptions{blockUDPA: true})
	lab.join()
	expectVideoFrom(lab.alice, "Bob")
	expectVideoFrom(lab.bob, "Alice")

	alice, bob := selectedPair(lab.alice), selectedPair(lab.bob)
	var sum iceSummary
	lab.alice.value(iceSummaryJS, &sum)
	t.Logf("alice (UDP blocked): selected pair: %v\n%v", alice, sum)
	t.Logf("bob: selected pair: %v", bob)
	if has(sum.Local, "srflx") || has(sum.Local, "relay/udp/udp") {
		t.Errorf("alice reached STUN/TURN over UDP, which her network drops: %v", sum)
	}
	expectRelayToRelay(lab.alice, alice)
	expectRelayToRelay(lab.bob, bob)
	if alice.Local.RelayProtocol != "tcp" {
		t.Errorf("alice: selected local candidate is %v, want a relay reached over TCP", alice.Local)
	}
}
