package e2e

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkJoinToFirstFrame measures, in headless Chromium on loopback, the time
// from clicking "Join" to the first decoded remote video frame for a second
// participant joining someone already in the room. It reports the median over
// b.N joins (run with -benchtime 7x or more).
func BenchmarkJoinToFirstFrame(b *testing.B) {
	ds := joinToFirstFrame(b, b.N)
	b.ReportMetric(float64(median(ds).Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(slices.Max(ds).Microseconds())/1000, "ms-max")
	b.ReportMetric(0, "ns/op")
}

// joinToFirstFrame runs n joins and returns each one's join-to-first-frame time.
func joinToFirstFrame(t testing.TB, n int, serverArgs ...string) []time.Duration {
	ns, srv := lan(t, serverArgs...)
	br := newBrowser(t, ns)
	host := br.newPage(t, "host")
	var out []time.Duration
	for i := range n {
		url := newRoom(host, srv.url)
		join(host, url, "Host")
		guest := br.newPage(t, "guest")
		guest.addInitScript(probeJS)
		guest.navigate(url)
		// Let the preview start first, as a person would see it before clicking.
		guest.waitFor(`findButton("Join") && document.querySelector("video") && document.querySelector("video").readyState >= 2`, 20*time.Second)
		join(guest, url, "Guest")
		guest.waitFor(`window.parley.timings.firstRemoteFrame > 0`, 20*time.Second)
		var ms float64
		guest.value(`window.parley.timings.firstRemoteFrame - window.parley.timings.joinClicked`, &ms)
		out = append(out, time.Duration(ms*float64(time.Millisecond)))
		var phases map[string]float64
		guest.value(`Object.fromEntries(Object.entries(window.__probe).map(([k, v]) => [k, Math.round(v - window.parley.timings.joinClicked)]))`, &phases)
		t.Logf("join %d: first remote frame after %.0f ms; phases (ms after click): %v", i+1, ms, phases)
		guest.click("Leave")
		guest.cancel()
		host.click("Leave")
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// probeJS records when each step of a join happens, so the benchmark can say
// where the time goes.
const probeJS = `(() => {
	const probe = window.__probe = {}; window.__jbt = 0;
	const mark = k => { if (!(k in probe)) probe[k] = performance.now(); };
	const WS = window.WebSocket;
	window.WebSocket = class extends WS {
		constructor(...a) { super(...a); mark('wsCreated');
			this.addEventListener('open', () => mark('wsOpen'));
			this.addEventListener('message', e => { if (String(e.data).includes('"joined"')) mark('joined');
				if (String(e.data).includes('"answer"')) mark('answer'); });
		}
		send(d) { if (String(d).includes('"offer"')) mark('offerSent'); super.send(d); }
	};
	const PC = window.RTCPeerConnection;
	window.RTCPeerConnection = class extends PC {
		constructor(...a) { super(...a); mark('pcCreated');
			this.addEventListener('icecandidate', () => mark('firstCandidate'));
			this.addEventListener('iceconnectionstatechange', () => { if (this.iceConnectionState === 'connected') mark('iceConnected'); });
			this.addEventListener('connectionstatechange', () => { if (this.connectionState === 'connected') mark('dtlsConnected'); });
			this.addEventListener('track', (e) => { mark('track'); if (window.__jbt !== undefined) e.receiver.jitterBufferTarget = window.__jbt; e.receiver.playoutDelayHint = 0; });
		}
	};
})();`
