package e2e

import (
	"fmt"
	"testing"
	"time"
)

// newRoomWithMode creates a room from the landing page with the given call
// type chosen, and returns its URL.
func newRoomWithMode(p *page, base, mode string) string {
	p.t.Helper()
	p.navigate(base + "/")
	var ok bool
	p.value(fmt.Sprintf(`(() => { const s = document.getElementById('room-mode'); s.value = %q; return s.value === %q })()`, mode, mode), &ok)
	if !ok {
		p.t.Fatalf("%s: the landing page has no call type %q", p.name, mode)
	}
	p.click("New room")
	p.waitFor(`location.pathname.startsWith("/r/")`, 15*time.Second)
	var url string
	p.value("location.href", &url)
	return url
}

// expectAudioStreams waits until the page receives n audio streams whose
// bytes keep growing (in an SFU room they all arrive on one connection).
func expectAudioStreams(p tab, n int) {
	t := p.tb()
	t.Helper()
	const perStream = `(async () => {
		const out = {};
		for (const { pc } of window.parley.connections())
			(await pc.getStats()).forEach(r => { if (r.type === 'inbound-rtp' && r.kind === 'audio') out[r.ssrc] = r.bytesReceived || 0; });
		return out;
	})()`
	p.waitFor(fmt.Sprintf(`(async () => Object.values(await %s).filter(b => b > 0).length >= %d)()`, perStream, n), 20*time.Second)
	var before map[string]float64
	p.value(perStream, &before)
	deadline := time.Now().Add(15 * time.Second)
	for {
		var now map[string]float64
		p.value(perStream, &now)
		growing := 0
		for ssrc, b := range now {
			if b > before[ssrc] && before[ssrc] > 0 {
				growing++
			}
		}
		if growing >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d growing audio streams: before %v, now %v", p, n, before, now)
		}
		time.Sleep(200 * time.Millisecond) // sampling interval of the stats
	}
}

func TestSFUFourPeople(t *testing.T) {
	ns, srv := lan(t)
	b := newBrowser(t, ns)
	names := []string{"Ann", "Ben", "Cat", "Dan"}
	pages := make([]*page, len(names))
	for i, n := range names {
		pages[i] = b.newPage(t, n)
	}
	url := newRoomWithMode(pages[0], srv.url, "sfu")
	for i, p := range pages {
		join(p, url, names[i])
	}
	if pages[3].valueString("window.parley.mode") != "sfu" {
		t.Fatalf("room mode is not sfu")
	}
	for i, p := range pages {
		var others []string
		for j, n := range names {
			if j != i {
				others = append(others, n)
			}
		}
		expectVideoFrom(p, others...)
	}
	for _, p := range pages {
		// One connection (to the server) carrying three people's audio.
		p.waitFor(`window.parley.connections().length === 1`, 5*time.Second)
		expectAudioStreams(p, 3)
	}

	// Screen share: Ann's tile on the others switches to the screen (another
	// size) and keeps playing.
	var camWidth int
	pages[1].value(`remoteTiles().find(t => t.querySelector('.tile-name').textContent.includes('Ann')).querySelector('video').videoWidth`, &camWidth)
	pages[0].click("Share screen")
	pages[0].waitFor(`findButton("Stop sharing")`, 10*time.Second)
	for _, p := range pages[1:] {
		p.waitFor(fmt.Sprintf(`(() => { const v = remoteTiles().find(t => t.querySelector('.tile-name').textContent.includes('Ann')).querySelector('video'); return v.videoWidth > 0 && v.videoWidth !== %d })()`, camWidth), 15*time.Second)
	}
	expectVideoFrom(pages[1], "Ann", "Cat", "Dan")

	// Dan leaves: his tile goes away for everyone.
	pages[3].click("Leave")
	for _, p := range pages[:3] {
		p.waitFor(`remoteTiles().length === 2 && !remoteTiles().some(t => t.textContent.includes('Dan'))`, 10*time.Second)
	}
}

// valueString evaluates a JavaScript expression to a string.
func (p *page) valueString(js string) string {
	p.t.Helper()
	var s string
	p.value(js, &s)
	return s
}
