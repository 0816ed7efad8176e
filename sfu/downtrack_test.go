package sfu

import (
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// fakeContext binds a downTrack without a PeerConnection.
type fakeContext struct {
	w    webrtc.TrackLocalWriter
	ssrc webrtc.SSRC
}

var opusParams = webrtc.RTPCodecParameters{PayloadType: 111, RTPCodecCapability: webrtc.RTPCodecCapability{
	MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}}

func (f *fakeContext) CodecParameters() []webrtc.RTPCodecParameters {
	return []webrtc.RTPCodecParameters{opusParams}
}
func (f *fakeContext) HeaderExtensions() []webrtc.RTPHeaderExtensionParameter { return nil }
func (f *fakeContext) SSRC() webrtc.SSRC                                      { return f.ssrc }
func (f *fakeContext) SSRCRetransmission() webrtc.SSRC                        { return 0 }
func (f *fakeContext) SSRCForwardErrorCorrection() webrtc.SSRC                { return 0 }
func (f *fakeContext) WriteStream() webrtc.TrackLocalWriter                   { return f.w }
func (f *fakeContext) ID() string                                             { return "fake" }
func (f *fakeContext) RTCPReader() interceptor.RTCPReader                     { return nil }

// countingWriter marshals each packet (as SRTP would, before encrypting)
// and counts it.
type countingWriter struct {
	n    atomic.Int64
	want int64
	all  chan struct{} // closed when want packets were written
	buf  [1500]byte
}

func (w *countingWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	n, err := h.MarshalTo(w.buf[:])
	if err != nil {
		return 0, err
	}
	n += copy(w.buf[n:], payload)
	if w.n.Add(1) == w.want {
		close(w.all)
	}
	return n, nil
}
func (w *countingWriter) Write(b []byte) (int, error) { return len(b), nil }

// blockingWriter is a subscriber whose connection never drains.
type blockingWriter struct{ release chan struct{} }

func (w *blockingWriter) WriteRTP(*rtp.Header, []byte) (int, error) {
	<-w.release
	return 0, nil
}
func (w *blockingWriter) Write(b []byte) (int, error) { return len(b), nil }

// newBareTrack is a published audio track with an SFU around it but no
// PeerConnections.
func newBareTrack(tb testing.TB, queueSize int) (*SFU, *pubTrack) {
	s := &SFU{log: testLogger(tb), queueSize: queueSize, done: make(chan struct{}), rooms: map[string]*room{}}
	pub := &Participant{sfu: s, id: "pub", log: s.log}
	t := &pubTrack{owner: pub, kind: webrtc.RTPCodecTypeAudio, codec: opusParams, id: "audio"}
	t.downs.Store(&[]*downTrack{})
	return s, t
}

func bind(tb testing.TB, t *pubTrack, id string, w webrtc.TrackLocalWriter, ssrc webrtc.SSRC) *downTrack {
	d := newDownTrack(t, &Participant{sfu: t.owner.sfu, id: id, log: t.owner.log})
	if !t.attach(d) {
		tb.Fatal("attach failed")
	}
	if _, err := d.Bind(&fakeContext{w: w, ssrc: ssrc}); err != nil {
		tb.Fatal(err)
	}
	return d
}

func testPacket(seq uint16) *rtp.Packet {
	return &rtp.Packet{
		Header:  rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: uint32(seq) * 960, SSRC: 42},
		Payload: make([]byte, 160),
	}
}

// A stalled subscriber costs the publisher's read loop nothing and the
// other subscribers nothing: its queue fills, then its packets are dropped
// and counted.
func TestStalledSubscriberDelaysNobody(t *testing.T) {
	const packets, queue = 1000, 64
	s, track := newBareTrack(t, queue)
	fast := &countingWriter{want: packets, all: make(chan struct{})}
	stalled := &blockingWriter{release: make(chan struct{})}
	df := bind(t, track, "fast", fast, 1)
	ds := bind(t, track, "stalled", stalled, 2)
	defer func() {
		close(stalled.release)
		df.close()
		ds.close()
		s.wg.Wait()
	}()

	tick := time.NewTicker(200 * time.Microsecond) // 5000 packets/s
	defer tick.Stop()
	var slowest time.Duration
	for i := range packets {
		<-tick.C
		pkt := testPacket(uint16(i))
		start := time.Now()
		for _, d := range *track.downs.Load() {
			d.enqueue(pkt)
		}
		slowest = max(slowest, time.Since(start))
	}
	select {
	case <-fast.all:
	case <-time.After(5 * time.Second):
		t.Fatalf("the other subscriber got %d of %d packets", fast.n.Load(), packets)
	}
	t.Logf("slowest hand-off to 2 subscribers: %v; dropped for the stalled one: %d", slowest, s.stats.dropped.Load())
	if dropped := s.stats.dropped.Load(); dropped < packets-queue-1 {
		t.Errorf("dropped %d; want at least %d", dropped, packets-queue-1)
	}
	if slowest > 5*time.Millisecond {
		t.Errorf("a hand-off took %v", slowest)
	}
}

// BenchmarkFanout compares the cost of forwarding one packet to one
// subscriber through the per-subscriber queue and writer goroutine with
// pion's TrackLocalStaticRTP writing to every subscriber from the read loop.
// Both write to in-memory writers that only marshal (no SRTP, no socket), so
// this is the cost of the hand-off itself; cpu-ns/fwd is process CPU time
// (all goroutines) per forwarded packet. The queues are big enough to drop
// nothing.
func BenchmarkFanout(b *testing.B) {
	for _, subs := range []int{1, 10, 50} {
		b.Run("queues/subs="+strconv.Itoa(subs), func(b *testing.B) {
			s, track := newBareTrack(b, b.N+1)
			writers := make([]*countingWriter, subs)
			for i := range writers {
				writers[i] = &countingWriter{want: int64(b.N), all: make(chan struct{})}
				bind(b, track, strconv.Itoa(i), writers[i], webrtc.SSRC(i+1))
			}
			pkt := testPacket(1)
			cpu := cpuTime()
			b.ResetTimer()
			for range b.N {
				for _, d := range *track.downs.Load() {
					d.enqueue(pkt)
				}
			}
			for _, w := range writers {
				<-w.all
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*subs), "cpu-ns/fwd")
			if d := s.stats.dropped.Load(); d != 0 {
				b.Errorf("%d dropped", d)
			}
			for _, d := range *track.downs.Load() {
				d.close()
			}
			s.wg.Wait()
		})
		b.Run("static/subs="+strconv.Itoa(subs), func(b *testing.B) {
			st, err := webrtc.NewTrackLocalStaticRTP(opusParams.RTPCodecCapability, "audio", "pub")
			if err != nil {
				b.Fatal(err)
			}
			for i := range subs {
				w := &countingWriter{want: -1}
				if _, err := st.Bind(&fakeContext{w: w, ssrc: webrtc.SSRC(i + 1)}); err != nil {
					b.Fatal(err)
				}
			}
			pkt := testPacket(1)
			cpu := cpuTime()
			b.ResetTimer()
			for range b.N {
				if err := st.WriteRTP(pkt); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*subs), "cpu-ns/fwd")
		})
	}
}

// cpuTime is the CPU time the process has used, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
