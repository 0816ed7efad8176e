package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// firefoxBin is Debian's Firefox ESR, installed by `make test`.
const firefoxBin = "firefox-esr"

// TestFirefoxChromiumMesh: a Chromium and a Firefox participant see and hear
// each other over a direct connection, whichever joins first (the newcomer
// offers, so each browser takes each side of the negotiation once).
func TestFirefoxChromiumMesh(t *testing.T) {
	firefoxChromiumCall(t, "p2p")
}

// TestFirefoxChromiumSFU: the same through the server's SFU.
func TestFirefoxChromiumSFU(t *testing.T) {
	firefoxChromiumCall(t, "sfu")
}

func firefoxChromiumCall(t *testing.T, mode string) {
	requireFirefox(t)
	ns, srv := lan(t)
	// Each tab's name is also the participant's name in the room.
	fox := newFirefox(t, ns).newPage(t, "Fox")
	chrome := newBrowser(t, ns).newPage(t, "Chrome")
	t.Cleanup(func() {
		// A timed-out wait shows its own page's state; the other side's
		// connections often say more.
		if t.Failed() {
			for _, p := range []tab{chrome, fox} {
				t.Logf("%s: connections: %s", p, describeConnections(p))
			}
		}
	})

	for _, order := range [][]tab{{chrome, fox}, {fox, chrome}} {
		t.Logf("%s joins first", order[0])
		// Chromium creates the room; leaving for the landing page ends the
		// call before.
		url := newRoomWithMode(chrome, srv.url, mode)
		for _, p := range order {
			join(p, url, p.String())
		}
		for _, p := range order {
			var got string
			p.value("window.parley.mode", &got)
			if got != mode {
				t.Fatalf("%s: room mode is %q, want %q", p, got, mode)
			}
		}
		expectVideoFrom(chrome, fox.String())
		expectVideoFrom(fox, chrome.String())
		// One connection either way: to the other browser, or to the server.
		expectAudioFrom(chrome, 1)
		expectAudioFrom(fox, 1)
		for _, p := range order {
			// The first-frame hook (requestVideoFrameCallback, or the
			// events it falls back to) fired.
			p.waitFor(`window.parley.timings.firstRemoteFrame !== null`, 5*time.Second)
		}
	}
}

// connectionsJS describes the page's peer connections: their states and the
// RTP packets of each stream, sent and received.
const connectionsJS = `(async () => {
	const out = [];
	for (const { peerId, pc } of window.parley.connections()) {
		const streams = [];
		(await pc.getStats()).forEach(r => {
			if (r.type === 'inbound-rtp') streams.push('in ' + r.kind + ' ' + r.packetsReceived);
			if (r.type === 'outbound-rtp') streams.push('out ' + r.kind + ' ' + r.packetsSent);
		});
		out.push({ peerId, signaling: pc.signalingState, ice: pc.iceConnectionState, connection: pc.connectionState, streams });
	}
	return out;
})()`

// describeConnections returns connectionsJS's answer as JSON, or why there
// is none. It never fails the test: it runs when the test already failed.
func describeConnections(p tab) string {
	var s string
	var err error
	switch p := p.(type) {
	case *ffPage:
		s, err = p.evaluate(connectionsJS)
	case *page:
		s, err = evalJS[string](p, "(async () => JSON.stringify(await "+connectionsJS+"))()")
	}
	if err != nil {
		return err.Error()
	}
	return s
}

// firefoxPrefs make a fresh profile fit for a test: fake camera and
// microphone without asking, sound that plays without a click, no IPv6, and
// no traffic of its own (updates, telemetry, safe browsing, captive portal
// checks). The namespace has no way out anyway; these keep Firefox from
// waiting on it. remote.prefs.recommended adds the remote agent's own list.
var firefoxPrefs = []struct {
	name  string
	value any
}{
	{"media.navigator.streams.fake", true},
	{"media.navigator.permission.disabled", true},
	// Count the fake devices as capturing. A page that is not capturing
	// (and has no camera permission) gets ICE candidates only for the
	// address of the default route, and the lab has no default route: no
	// candidate at all, and every call fails.
	{"media.navigator.permission.fake", true},
	{"media.autoplay.default", 0}, // allow
	{"media.autoplay.blocking_policy", 0},
	// Host candidates as addresses, not mDNS names: the namespace has no
	// multicast DNS, and Chromium runs with its mDNS hiding off too.
	{"media.peerconnection.ice.obfuscate_host_addresses", false},
	{"network.dns.disableIPv6", true},
	{"remote.prefs.recommended", true},
	{"browser.startup.page", 0}, // a blank first tab
	{"browser.startup.homepage_override.mstone", "ignore"},
	{"browser.shell.checkDefaultBrowser", false},
	{"browser.newtabpage.enabled", false},
	{"browser.aboutwelcome.enabled", false},
	{"app.update.enabled", false},
	{"app.update.auto", false},
	{"app.normandy.enabled", false},
	{"extensions.update.enabled", false},
	{"extensions.getAddons.cache.enabled", false},
	{"extensions.blocklist.enabled", false},
	{"media.gmp-manager.updateEnabled", false},
	{"media.gmp-gmpopenh264.autoupdate", false},
	{"browser.safebrowsing.malware.enabled", false},
	{"browser.safebrowsing.phishing.enabled", false},
	{"browser.safebrowsing.blockedURIs.enabled", false},
	{"browser.safebrowsing.downloads.enabled", false},
	{"browser.safebrowsing.downloads.remote.enabled", false},
	{"browser.safebrowsing.update.enabled", false},
	{"datareporting.healthreport.uploadEnabled", false},
	{"datareporting.policy.dataSubmissionEnabled", false},
	{"toolkit.telemetry.enabled", false},
	{"toolkit.telemetry.unified", false},
	{"toolkit.telemetry.archive.enabled", false},
	{"toolkit.telemetry.server", ""},
	{"network.captive-portal-service.enabled", false},
	{"network.connectivity-service.enabled", false},
	{"network.prefetch-next", false},
	{"network.dns.disablePrefetch", true},
	{"browser.search.update", false},
	{"messaging-system.rsexperimentloader.enabled", false},
}

// firefox is one headless Firefox process running inside a namespace,
// driven over WebDriver BiDi. Its remote agent listens on the namespace's
// loopback only; the test reaches it with a socket opened inside (netns.dial).
type firefox struct {
	bidi  *bidi
	first string // the first tab's browsing context, until newPage takes it

	mu  sync.Mutex
	log strings.Builder // Firefox's output and the pages' console; guarded by mu
}

var bidiListeningRE = regexp.MustCompile(`WebDriver BiDi listening on ws://(\S+)`)

// newFirefox starts Firefox in ns with a fresh profile. It is stopped, its
// whole process group killed, when the test ends; its output and the pages'
// console messages are logged if the test failed.
func newFirefox(t testing.TB, ns *netns) *firefox {
	t.Helper()
	bin := requireFirefox(t)
	profile := t.TempDir()
	var prefs strings.Builder
	for _, p := range firefoxPrefs {
		v, _ := json.Marshal(p.value)
		fmt.Fprintf(&prefs, "user_pref(%q, %s);\n", p.name, v)
	}
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(prefs.String()), 0o644); err != nil {
		t.Fatal(err)
	}

	f := &firefox{}
	// Port 0: Firefox picks one and says which on its output.
	cmd := exec.Command("ip", "netns", "exec", ns.name, bin,
		"--headless", "--no-remote", "--profile", profile, "--remote-debugging-port", "0")
	// A home of its own: Firefox keeps caches there even with --profile.
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "MOZ_CRASHREPORTER_DISABLE=1")
	// `ip netns exec` execs Firefox in place, so Firefox leads the group and
	// its content processes are in it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		out.Close()
		w.Close()
		t.Fatalf("start firefox: %v", err)
	}
	w.Close()
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		out.Close()
		if t.Failed() || testing.Verbose() {
			t.Logf("firefox log:\n%s", f.logs())
		}
	})

	addr := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			f.write(line)
			if m := bidiListeningRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	var hostPort string
	select {
	case hostPort = <-addr:
	case <-time.After(30 * time.Second):
		t.Fatalf("firefox did not start its remote agent within 30s:\n%s", f.logs())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dial := func(ctx context.Context) (net.Conn, error) { return ns.dial(ctx, "tcp", hostPort) }
	f.bidi, err = dialBiDi(ctx, "ws://"+hostPort+"/session", dial, f.event)
	if err != nil {
		t.Fatalf("firefox: %v", err)
	}
	t.Cleanup(f.bidi.close) // before the process is killed
	if err := f.bidi.call(ctx, "session.new", map[string]any{"capabilities": map[string]any{}}, nil); err != nil {
		t.Fatalf("firefox: %v", err)
	}
	if err := f.bidi.call(ctx, "session.subscribe", map[string]any{"events": []string{"log.entryAdded"}}, nil); err != nil {
		t.Fatalf("firefox: %v", err)
	}
	var tree struct {
		Contexts []struct {
			Context string `json:"context"`
		} `json:"contexts"`
	}
	if err := f.bidi.call(ctx, "browsingContext.getTree", map[string]any{"maxDepth": 0}, &tree); err != nil {
		t.Fatalf("firefox: %v", err)
	}
	if len(tree.Contexts) > 0 {
		f.first = tree.Contexts[0].Context
	}
	return f
}

// requireFirefox returns the path of Firefox, or ends the test if there is
// none: skipped, except in CI where it fails.
func requireFirefox(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath(firefoxBin)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI never skips; run `make test`, which installs what is missing)", firefoxBin)
		}
		t.Skipf("%s is not installed; scripts/install-test-deps.sh installs it", firefoxBin)
	}
	return bin
}

// newPage opens a tab. The first call reuses Firefox's first tab. (Firefox
// may throttle tabs in the background; the tests use one per browser.)
func (f *firefox) newPage(t testing.TB, name string) *ffPage {
	t.Helper()
	p := &ffPage{t: t, name: name, ff: f, context: f.first}
	f.first = ""
	if p.context != "" {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var created struct {
		Context string `json:"context"`
	}
	if err := f.bidi.call(ctx, "browsingContext.create", map[string]any{"type": "tab"}, &created); err != nil {
		t.Fatalf("%s: open tab: %v", name, err)
	}
	p.context = created.Context
	return p
}

// event records the pages' console messages and uncaught errors.
func (f *firefox) event(method string, params json.RawMessage) {
	if method != "log.entryAdded" {
		return
	}
	var e struct {
		Level string `json:"level"`
		Text  string `json:"text"`
	}
	if json.Unmarshal(params, &e) == nil {
		f.write(fmt.Sprintf("console %s: %s\n", e.Level, e.Text))
	}
}

func (f *firefox) write(s string) {
	f.mu.Lock()
	f.log.WriteString(s)
	f.mu.Unlock()
}

func (f *firefox) logs() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.log.String()
}

// ffPage is one Firefox tab: one participant. It has the methods of page
// that the call helpers use (the tab interface).
type ffPage struct {
	t       testing.TB
	name    string
	ff      *firefox
	context string // the BiDi browsing context id
}

func (p *ffPage) tb() testing.TB { return p.t }
func (p *ffPage) String() string { return p.name }

func (p *ffPage) navigate(url string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := p.ff.bidi.call(ctx, "browsingContext.navigate", map[string]any{
		"context": p.context, "url": url, "wait": "complete",
	}, nil)
	if err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

func (p *ffPage) currentURL() string {
	s, _ := p.evaluate("location.href")
	var u string
	json.Unmarshal([]byte(s), &u)
	return u
}

// evaluate runs a JavaScript expression in the page, with helpersJS
// defined and a promise awaited, and returns its value as JSON. The page
// serializes it (JSON.stringify) so that only a string crosses BiDi.
func (p *ffPage) evaluate(js string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var res struct {
		Type   string `json:"type"` // "success" or "exception"
		Result struct {
			Type  string          `json:"type"`
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	err := p.ff.bidi.call(ctx, "script.evaluate", map[string]any{
		"expression":      helpersJS + "\n;(async () => JSON.stringify(await (" + js + ")))()",
		"target":          map[string]any{"context": p.context},
		"awaitPromise":    true,
		"resultOwnership": "none",
		// As if the user had clicked: what a click may start (sound), the
		// tests' clicks may start too.
		"userActivation": true,
	}, &res)
	if err != nil {
		return "", err
	}
	if res.Type == "exception" {
		return "", fmt.Errorf("%s", res.ExceptionDetails.Text)
	}
	if res.Result.Type != "string" {
		return "", fmt.Errorf("the value is %s, which JSON cannot hold", res.Result.Type)
	}
	var s string
	if err := json.Unmarshal(res.Result.Value, &s); err != nil {
		return "", err
	}
	return s, nil
}

func (p *ffPage) value(js string, out any) {
	p.t.Helper()
	s, err := p.evaluate(js)
	if err != nil {
		p.t.Fatalf("%s: evaluate %s: %v", p.name, js, err)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		p.t.Fatalf("%s: decode %q: %v", p.name, s, err)
	}
}

func (p *ffPage) waitFor(cond string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s, err := p.evaluate("(async () => !!(await (" + cond + ")))()")
		if err == nil && s == "true" {
			return
		}
		if time.Now().After(deadline) {
			state, _ := p.evaluate("debugState()")
			p.t.Fatalf("%s: timed out after %v waiting for %s (err %v)\npage state: %s", p.name, timeout, cond, err, state)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a condition inside the page
	}
}

func (p *ffPage) click(name string) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("!!findButton(%q)", name), 15*time.Second)
	if _, err := p.evaluate(fmt.Sprintf("(() => { findButton(%q).click(); return true })()", name)); err != nil {
		p.t.Fatalf("%s: click %q: %v", p.name, name, err)
	}
}
