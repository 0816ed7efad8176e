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
	for _, mode := range []string{"p2p", "sfu"} {
		b.Run(mode, func(b *testing.B) {
			ds := joinToFirstFrame(b, b.N, mode)
			b.ReportMetric(float64(median(ds).Microseconds())/1000, "ms-median")
			b.ReportMetric(float64(slices.Max(ds).Microseconds())/1000, "ms-max")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// joinToFirstFrame runs n joins in rooms of the given mode and returns each
// one's join-to-first-frame time.
func joinToFirstFrame(t testing.TB, n int, mode string) []time.Duration {
	ns, srv := lan(t)
	br := newBrowser(t, ns)
	host := br.newPage(t, "host")
	var out []time.Duration
	for i := range n {
		url := newRoomWithMode(host, srv.url, mode)
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
		var kf map[string]float64
		guest.value(`(async () => { const o = {}; for (const { pc } of window.parley.connections()) (await pc.getStats()).forEach(r => {
			if (r.type === 'inbound-rtp' && r.kind === 'video') { o.pli = r.pliCount; o.fir = r.firCount; o.keyFramesDecoded = r.keyFramesDecoded; o.framesDecoded = r.framesDecoded; }
			if (r.type === 'outbound-rtp' && r.kind === 'video') { o.outKeyFrames = r.keyFramesEncoded; o.outPli = r.pliCount; } }); return o; })()`, &kf)
		t.Logf("join %d: first remote frame after %.0f ms; phases (ms after click): %v; video: %v", i+1, ms, phases, kf)
		guest.click("Leave")
		guest.cancel()
		host.click("Leave")
	}
	return out
}

// BenchmarkUplink measures what each of four Chromium participants uploads
// (outbound RTP bytes from getStats, over all its connections) during a fixed
// window, once in a mesh room and once in an SFU room, and reports the ratio.
func BenchmarkUplink(b *testing.B) {
	const window = 15 * time.Second
	perMode := map[string]float64{}
	for _, mode := range []string{"p2p", "sfu"} {
		ns, srv := lan(b)
		br := newBrowser(b, ns)
		names := []string{"Ann", "Ben", "Cat", "Dan"}
		pages := make([]*page, len(names))
		for i, n := range names {
			pages[i] = br.newPage(b, n)
			pages[i].addInitScript(smallCameraJS)
		}
		url := newRoomWithMode(pages[0], srv.url, mode)
		for i, p := range pages {
			join(p, url, names[i])
		}
		for _, p := range pages {
			p.waitFor(`remoteTiles().length === 3 && remoteFrames().every(f => f.frames > 0)`, 30*time.Second)
		}
		// Let bandwidth estimation settle, then measure a window.
		time.Sleep(5 * time.Second) // a fixed settling time is the measurement, not a wait for an event
		before := uplinkBytes(pages)
		time.Sleep(window) // the measured window
		after := uplinkBytes(pages)
		var total float64
		for i := range pages {
			total += after[i] - before[i]
		}
		perParticipant := total / float64(len(pages)) * 8 / window.Seconds() / 1000
		perMode[mode] = perParticipant
		b.Logf("%s: uplink per participant %.0f kbit/s (%v)", mode, perParticipant, func() []int {
			var k []int
			for i := range pages {
				k = append(k, int((after[i]-before[i])*8/window.Seconds()/1000))
			}
			return k
		}())
		b.ReportMetric(perParticipant, mode+"-kbit/s")
		var video []map[string]any
		pages[0].value(`(async () => { const o = []; for (const { pc } of window.parley.connections()) (await pc.getStats()).forEach(r => {
			if (r.type === 'outbound-rtp' && r.kind === 'video') o.push({ width: r.frameWidth, fps: r.framesPerSecond, target: r.targetBitrate, limit: r.qualityLimitationReason, encoder: r.encoderImplementation });
			if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') o.push({ availableOutgoing: r.availableOutgoingBitrate }); }); return o; })()`, &video)
		b.Logf("%s: Ann's video senders: %v", mode, video)
		for _, p := range pages {
			p.cancel()
		}
	}
	b.ReportMetric(perMode["sfu"]/perMode["p2p"], "sfu/mesh")
	b.ReportMetric(0, "ns/op")
}

// smallCameraJS captures the camera at 320x240, 15 fps, in both modes: at the
// client's default (1280x720) four tabs that each encode three mesh streams
// run out of this machine's two cores, and the mesh streams then fall below
// what one SFU stream gets, which measures CPU, not the uplink cut.
const smallCameraJS = `(() => {
	const md = navigator.mediaDevices, gum = md.getUserMedia.bind(md);
	md.getUserMedia = c => gum(c && c.video ? { ...c, video: { ...(typeof c.video === 'object' ? c.video : {}), width: 320, height: 240, frameRate: 15 } } : c);
})();`

// uplinkBytes returns, for each page, the RTP bytes it has sent so far.
func uplinkBytes(pages []*page) []float64 {
	out := make([]float64, len(pages))
	for i, p := range pages {
		p.value(`(async () => {
			let sent = 0;
			for (const { pc } of window.parley.connections())
				(await pc.getStats()).forEach(r => { if (r.type === 'outbound-rtp') sent += (r.bytesSent || 0) + (r.headerBytesSent || 0); });
			return sent;
		})()`, &out[i])
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
	const probe = window.__probe = {};
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
			this.addEventListener('track', () => mark('track'));
		}
	};
})();`
