package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// lan is the simplest lab: one namespace with a LAN interface, holding the
// server and the browsers.
func lan(t testing.TB, serverArgs ...string) (*netns, *server) {
	t.Helper()
	ns := newNetns(t)
	link(t, ns, "10.77.0.1/24", ns, "10.77.0.2/24")
	args := append([]string{"--listen", "127.0.0.1:8080", "--turn=false"}, serverArgs...)
	return ns, startServer(t, ns, args...)
}

// newRoom clicks "New room" on the landing page and returns the room's URL.
func newRoom(p *page, base string) string {
	p.t.Helper()
	p.navigate(base + "/")
	p.click("New room")
	p.waitFor(`location.pathname.startsWith("/r/")`, 15*time.Second)
	var url string
	p.value("location.href", &url)
	return url
}

// join opens the room page, types a name and clicks "Join".
func join(p tab, url, name string) {
	t := p.tb()
	t.Helper()
	if p.currentURL() != url {
		p.navigate(url)
	}
	p.waitFor(`findButton("Join")`, 20*time.Second)
	if name != "" {
		var ok bool
		p.value(fmt.Sprintf(`(() => {
			const label = [...document.querySelectorAll('label')].find(l => l.textContent.trim().startsWith('Your name'));
			const input = label && (label.control || label.querySelector('input'));
			if (!input) return false;
			input.value = %q;
			input.dispatchEvent(new Event('input', {bubbles: true}));
			input.dispatchEvent(new Event('change', {bubbles: true}));
			return true;
		})()`, name), &ok)
		if !ok {
			t.Fatalf("%s: no field labelled \"Your name\"", p)
		}
	}
	p.click("Join")
	p.waitFor(`window.parley && window.parley.state === "joined"`, 20*time.Second)
}

func (p *page) currentURL() string {
	u, _ := evalJS[string](p, "location.href")
	return u
}

// expectVideoFrom waits until the page shows exactly the named remote
// participants, each tile with a name and a video whose decoded frame count
// keeps increasing.
func expectVideoFrom(p tab, names ...string) {
	t := p.tb()
	t.Helper()
	p.waitFor(fmt.Sprintf(`remoteTiles().length === %d && remoteFrames().every(f => f.frames > 0)`, len(names)), 30*time.Second)
	var first []struct {
		ID     string
		Name   string
		Frames int
	}
	p.value("remoteFrames()", &first)
	var got []string
	for _, f := range first {
		got = append(got, strings.TrimSpace(f.Name))
	}
	for _, want := range names {
		found := false
		for _, g := range got {
			found = found || strings.Contains(g, want)
		}
		if !found {
			t.Fatalf("%s: remote tiles are named %q, want one named %q", p, got, want)
		}
	}
	// Live video: every tile's decoded frame count grows by at least 10.
	cond := make([]string, 0, len(first))
	for _, f := range first {
		cond = append(cond, fmt.Sprintf(`(remoteFrames().find(f => f.id === %q) || {frames: 0}).frames >= %d`, f.ID, f.Frames+10))
	}
	p.waitFor(strings.Join(cond, " && "), 20*time.Second)
}

// expectAudioFrom waits until audio from n peer connections is being received
// and decoded: bytes and samples keep growing.
func expectAudioFrom(p tab, n int) {
	t := p.tb()
	t.Helper()
	p.waitFor(fmt.Sprintf(`window.parley.connections().length === %d`, n), 20*time.Second)
	type stats map[string]struct{ AudioBytes, AudioSamples float64 }
	var before stats
	p.waitFor(`(async () => Object.values(await inboundStats()).every(s => s.audioSamples > 0))()`, 20*time.Second)
	p.value("inboundStats()", &before)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var now stats
		p.value("inboundStats()", &now)
		growing := len(now) == n
		for id, s := range now {
			growing = growing && s.AudioBytes > before[id].AudioBytes && s.AudioSamples > before[id].AudioSamples
		}
		if growing {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: audio is not flowing: before %v, now %v", p, before, now)
		}
		time.Sleep(200 * time.Millisecond) // sampling interval of the stats
	}
}

func TestTwoParticipantsSeeAndHearEachOther(t *testing.T) {
	ns, srv := lan(t)
	b := newBrowser(t, ns)
	alice, bob := b.newPage(t, "alice"), b.newPage(t, "bob")

	url := newRoom(alice, srv.url)
	if !strings.HasPrefix(url, srv.url+"/r/") {
		t.Fatalf("New room led to %s, want %s/r/ID", url, srv.url)
	}
	join(alice, url, "Alice")
	join(bob, url, "Bob")

	expectVideoFrom(alice, "Bob")
	expectVideoFrom(bob, "Alice")
	expectAudioFrom(alice, 1)
	expectAudioFrom(bob, 1)
}

func TestThreePersonMesh(t *testing.T) {
	ns, srv := lan(t)
	b := newBrowser(t, ns)
	pages := []*page{b.newPage(t, "ann"), b.newPage(t, "ben"), b.newPage(t, "cat")}
	url := newRoom(pages[0], srv.url)
	for i, name := range []string{"Ann", "Ben", "Cat"} {
		join(pages[i], url, name)
	}
	expectVideoFrom(pages[0], "Ben", "Cat")
	expectVideoFrom(pages[1], "Ann", "Cat")
	expectVideoFrom(pages[2], "Ann", "Ben")
	for _, p := range pages {
		expectAudioFrom(p, 2)
	}
}

// noCameraJS makes the page behave as on a machine without a camera: video
// capture fails with NotFoundError and no video input is listed.
const noCameraJS = `(() => {
	const md = navigator.mediaDevices;
	const gum = md.getUserMedia.bind(md), enumerate = md.enumerateDevices.bind(md);
	md.getUserMedia = c => (c && c.video) ? Promise.reject(new DOMException('Requested device not found', 'NotFoundError')) : gum(c);
	md.enumerateDevices = async () => (await enumerate()).filter(d => d.kind !== 'videoinput');
})();`

func TestParticipantWithoutCamera(t *testing.T) {
	ns, srv := lan(t)
	b := newBrowser(t, ns)
	alice, nocam := b.newPage(t, "alice"), b.newPage(t, "nocam")
	nocam.addInitScript(noCameraJS)

	url := newRoom(alice, srv.url)
	join(alice, url, "Alice")
	join(nocam, url, "Nocam")

	// The participant without a camera still sees and hears the other one...
	expectVideoFrom(nocam, "Alice")
	expectAudioFrom(nocam, 1)
	// ...and sends its microphone.
	expectAudioFrom(alice, 1)
	alice.waitFor(`remoteTiles().length === 1`, 10*time.Second)
	var frames []struct{ Frames int }
	alice.value("remoteFrames()", &frames)
	var stats map[string]struct{ VideoBytes float64 }
	alice.value("inboundStats()", &stats)
	for _, s := range stats {
		if s.VideoBytes != 0 || len(frames) != 1 || frames[0].Frames != 0 {
			t.Fatalf("the participant without a camera sent video: %v bytes, tiles %v", s.VideoBytes, frames)
		}
	}
}

func TestLeaveRemovesTile(t *testing.T) {
	ns, srv := lan(t)
	b := newBrowser(t, ns)
	alice, bob := b.newPage(t, "alice"), b.newPage(t, "bob")
	url := newRoom(alice, srv.url)
	join(alice, url, "Alice")
	join(bob, url, "Bob")
	expectVideoFrom(alice, "Bob")

	bob.click("Leave")
	bob.waitFor(`window.parley.state === "left"`, 10*time.Second)
	alice.waitFor(`remoteTiles().length === 0`, 10*time.Second)
	alice.waitFor(`document.getElementById("status").textContent.includes("Bob")`, 10*time.Second)
}
