package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's Chromium, installed by `make test`.
const chromiumPath = "/usr/bin/chromium"

// browser is one headless Chromium process running inside a namespace. The test
// talks to it over the DevTools pipe, so it needs no network path to it.
type browser struct {
	ctx context.Context // the first tab; new tabs derive from it
}

// newBrowser starts Chromium in ns with fake camera and microphone. It is
// stopped when the test ends.
func newBrowser(t testing.TB, ns *netns, extraFlags ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		// Several participants share one browser as tabs: keep every tab running
		// at full speed even though only one can be "in front".
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-features", "Translate,MediaRouter,OptimizationHints,WebRtcHideLocalIpsWithMdns"),
		chromedp.ModifyCmdFunc(func(cmd *exec.Cmd) {
			// Run Chromium inside the namespace; the DevTools pipe (fds 3 and 4)
			// passes through `ip netns exec`, which execs Chromium in place.
			cmd.Args = append([]string{"ip", "netns", "exec", ns.name, cmd.Path}, cmd.Args[1:]...)
			cmd.Path, _ = exec.LookPath("ip")
			cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		}),
	}
	opts = append(opts, extraFlags...)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	return &browser{ctx: ctx}
}

// tab is what the call helpers (join, expectVideoFrom, ...) need of one
// participant's browser tab: page in Chromium, ffPage in Firefox.
type tab interface {
	tb() testing.TB // the test the tab belongs to
	String() string // the participant's name, for messages
	navigate(url string)
	currentURL() string
	// value evaluates a JavaScript expression (awaiting a promise, with
	// helpersJS defined) and decodes its JSON into out.
	value(js string, out any)
	// waitFor polls a JavaScript condition until it is truthy.
	waitFor(cond string, timeout time.Duration)
	// click clicks the button with this accessible name once it is there.
	click(name string)
}

var (
	_ tab = (*page)(nil)
	_ tab = (*ffPage)(nil)
)

// page is one Chromium tab: one participant.
type page struct {
	t      testing.TB
	name   string
	ctx    context.Context
	cancel context.CancelFunc // closes the tab
}

// newPage opens a tab. The first call reuses the browser's first tab.
func (b *browser) newPage(t testing.TB, name string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("%s: open tab: %v", name, err)
	}
	return &page{t: t, name: name, ctx: ctx, cancel: cancel}
}

func (p *page) tb() testing.TB { return p.t }
func (p *page) String() string { return p.name }

// addInitScript runs js in every document the tab loads from now on, before
// the page's own scripts.
func (p *page) addInitScript(js string) {
	p.t.Helper()
	_, err := chromedp.Run(p.ctx, chromedp.Action[cdppage.AddScriptToEvaluateOnNewDocumentResult](
		func(ctx context.Context, tg *chromedp.Target) (cdppage.AddScriptToEvaluateOnNewDocumentResult, error) {
			return cdp.Call(ctx, tg, cdppage.AddScriptToEvaluateOnNewDocument, cdppage.AddScriptToEvaluateOnNewDocumentParams{Source: js})
		}))
	if err != nil {
		p.t.Fatalf("%s: add init script: %v", p.name, err)
	}
}

// do runs chromedp actions with a deadline and fails the test on error.
func (p *page) do(timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

func (p *page) navigate(url string) {
	p.t.Helper()
	p.do(20*time.Second, chromedp.Navigate(url))
}

// evalJS evaluates a JavaScript expression (awaiting a promise, with the
// helpers defined) and decodes its value.
func evalJS[T any](p *page, js string) (T, error) {
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](helpersJS+"\n;"+js, chromedp.EvalAwaitPromise))
}

// value evaluates a JavaScript expression and decodes its value into out,
// failing the test on error.
func (p *page) value(js string, out any) {
	p.t.Helper()
	raw, err := evalJS[[]byte](p, "(async () => JSON.stringify(await ("+js+")))()")
	if err != nil {
		p.t.Fatalf("%s: evaluate %s: %v", p.name, js, err)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		p.t.Fatalf("%s: evaluate %s: %v", p.name, js, err)
	}
	if err := json.Unmarshal([]byte(s), out); err != nil {
		p.t.Fatalf("%s: decode %q: %v", p.name, s, err)
	}
}

// click clicks the visible, enabled button whose accessible name (aria-label
// or text) is name, waiting for it to appear.
func (p *page) click(name string) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf("!!findButton(%q)", name), 15*time.Second)
	if _, err := evalJS[bool](p, fmt.Sprintf("(() => { findButton(%q).click(); return true })()", name)); err != nil {
		p.t.Fatalf("%s: click %q: %v", p.name, name, err)
	}
}

// waitFor polls a JavaScript condition until it is truthy or the timeout ends.
// The condition may be a promise; its resolved value counts.
func (p *page) waitFor(cond string, timeout time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := evalJS[bool](p, "(async () => !!(await ("+cond+")))()")
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			state, _ := evalJS[string](p, "debugState()")
			p.t.Fatalf("%s: timed out after %v waiting for %s (err %v)\npage state: %s", p.name, timeout, cond, err, state)
		}
		time.Sleep(100 * time.Millisecond) // polling interval of a condition inside the page
	}
}

// helpersJS is defined in every evaluation that needs it.
const helpersJS = `
function accessibleName(el) {
	return (el.getAttribute('aria-label') || el.textContent || '').trim();
}
function findButton(name) {
	return [...document.querySelectorAll('button')].find(b => accessibleName(b) === name && !b.disabled && b.offsetParent !== null);
}
function remoteTiles() {
	return [...document.querySelectorAll('[data-peer-id]')].filter(t => t.dataset.peerId !== (window.parley && window.parley.id));
}
function remoteFrames() {
	return remoteTiles().map(t => {
		const v = t.querySelector('video');
		return { id: t.dataset.peerId, name: (t.querySelector('.tile-name') || {}).textContent || '', frames: videoFrames(v) };
	});
}
function videoFrames(v) {
	if (!v) return 0;
	// Firefox leaves a MediaStream's frames out of getVideoPlaybackQuality;
	// it counts them, as painted, in mozPaintedFrames.
	const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
	return Math.max(q, v.mozPaintedFrames || 0);
}
async function inboundStats() {
	const out = {};
	for (const { peerId, pc } of window.parley.connections()) {
		const s = { audioBytes: 0, audioSamples: 0, videoFrames: 0, videoBytes: 0 };
		(await pc.getStats()).forEach(r => {
			if (r.type !== 'inbound-rtp') return;
			if (r.kind === 'audio') { s.audioBytes += r.bytesReceived || 0; s.audioSamples += r.totalSamplesReceived || 0; }
			if (r.kind === 'video') { s.videoBytes += r.bytesReceived || 0; s.videoFrames += r.framesDecoded || 0; }
		});
		out[peerId] = s;
	}
	return out;
}
function debugState() {
	const p = window.parley || {};
	return JSON.stringify({ url: location.href, state: p.state, id: p.id,
		status: (document.getElementById('status') || {}).textContent,
		tiles: [...document.querySelectorAll('[data-peer-id]')].map(t => t.dataset.peerId),
		pcs: p.connections ? p.connections().map(c => c.peerId + ':' + c.pc.connectionState) : null });
}
`
