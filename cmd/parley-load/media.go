package main

import (
	"context"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// mediaConfig is what each publisher sends.
type mediaConfig struct {
	VideoBitrate int  // bits per second of VP8 payload
	FPS          int  // video frames per second
	MaxPayload   int  // RTP payload bytes per video packet, at most
	Audio        bool // also an Opus stream, 20 ms packets
	AudioBitrate int  // bits per second of Opus payload
}

// Stream kinds, as carried in the probe.
const (
	kindVideo = 0
	kindAudio = 1
)

// The probe is written into every payload at probeOffset, after the VP8
// payload descriptor and header (at most 4 + 10 bytes): a receiver learns
// from it which packet of which publisher's stream it got, whatever SSRC and
// sequence number the forwarder gave it, and when it was sent.
const (
	probeOffset = 16
	probeSize   = 20 // magic 4, publisher 2, kind 1, pad 1, index 4, send time 8
	minPayload  = probeOffset + probeSize
)

var probeMagic = [4]byte{'P', 'L', 'D', '1'}

// streamKey names a publisher's stream.
type streamKey struct {
	pub  uint16
	kind uint8
}

func putProbe(b []byte, k streamKey, index uint32, now time.Time) {
	p := b[probeOffset : probeOffset+probeSize]
	copy(p, probeMagic[:])
	binary.BigEndian.PutUint16(p[4:], k.pub)
	p[6], p[7] = k.kind, 0
	binary.BigEndian.PutUint32(p[8:], index)
	binary.BigEndian.PutUint64(p[12:], uint64(now.UnixNano()))
}

func readProbe(payload []byte) (k streamKey, index uint32, sent int64, ok bool) {
	if len(payload) < minPayload {
		return k, 0, 0, false
	}
	p := payload[probeOffset : probeOffset+probeSize]
	if [4]byte(p[:4]) != probeMagic {
		return k, 0, 0, false
	}
	k = streamKey{pub: binary.BigEndian.Uint16(p[4:]), kind: p[6]}
	return k, binary.BigEndian.Uint32(p[8:]), int64(binary.BigEndian.Uint64(p[12:])), true
}

// rtpPayload splits a raw RTP packet: sequence number, SSRC and payload
// (after CSRCs and header extensions, before padding).
func rtpPayload(b []byte) (seq uint16, ssrc uint32, payload []byte, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return 0, 0, nil, false
	}
	off := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 { // extension
		if len(b) < off+4 {
			return 0, 0, nil, false
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
	}
	end := len(b)
	if b[0]&0x20 != 0 && end > off { // padding
		end -= int(b[end-1])
	}
	if off > end {
		return 0, 0, nil, false
	}
	return binary.BigEndian.Uint16(b[2:]), binary.BigEndian.Uint32(b[8:]), b[off:end], true
}

// source generates one publisher's media in real time: VP8 frames of
// VideoBitrate/8/FPS bytes every 1/FPS s, each cut into packets of equal size
// of at most MaxPayload bytes (a 4-byte payload descriptor with a picture id,
// a VP8 frame header in the first, the marker bit on the last; a frame looks
// like a keyframe when a keyframe was asked for), and optionally an 80-byte
// Opus packet every 20 ms.
type source struct {
	// Static after construction.
	cfg        mediaConfig
	pub        uint16
	videoSSRC  uint32 // used by the floor only; pion sets its own
	audioSSRC  uint32
	videoSink  func(*rtp.Packet)
	audioSink  func(*rtp.Packet)
	videoBuf   []byte
	audioBuf   []byte
	frameBytes int

	keyframe atomic.Bool // the next frame is a keyframe

	// Packets generated so far, per stream: the index of the next one.
	videoSent atomic.Uint32
	audioSent atomic.Uint32
	// Video frames not sent because the source fell too far behind.
	framesSkipped atomic.Int64

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
}

func newSource(cfg mediaConfig, pub int) *source {
	s := &source{
		cfg:        cfg,
		pub:        uint16(pub),
		videoSSRC:  0x10000 + uint32(pub)*2,
		audioSSRC:  0x10001 + uint32(pub)*2,
		frameBytes: cfg.VideoBitrate / 8 / cfg.FPS,
		done:       make(chan struct{}),
	}
	s.frameBytes = max(s.frameBytes, minPayload)
	s.videoBuf = make([]byte, max(cfg.MaxPayload, minPayload))
	s.audioBuf = make([]byte, max(cfg.AudioBitrate/8/50, minPayload))
	// Noise, as compressed media looks.
	r := rand.New(rand.NewPCG(uint64(pub), 1))
	for i := range s.videoBuf {
		s.videoBuf[i] = byte(r.Uint32())
	}
	for i := range s.audioBuf {
		s.audioBuf[i] = byte(r.Uint32())
	}
	s.keyframe.Store(true)
	return s
}

// packetsPerSecond is how many packets a source sends.
func (cfg mediaConfig) packetsPerSecond() float64 {
	n := float64(cfg.FPS * packetsPerFrame(max(cfg.VideoBitrate/8/cfg.FPS, minPayload), cfg.MaxPayload))
	if cfg.Audio {
		n += 50
	}
	return n
}

// vp8Descriptor is the VP8 payload descriptor the source writes: X, S, PID
// 0 in the first byte, I in the second, a 15-bit picture id.
const vp8DescriptorSize = 4

func packetsPerFrame(frameBytes, maxPayload int) int {
	room := max(maxPayload, minPayload) - vp8DescriptorSize
	return (frameBytes + room - 1) / room
}

// start sends until stop. The sinks are called on the source's goroutine,
// one packet at a time; they may keep nothing of it.
func (s *source) start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx)
}

// stop ends the source and waits for its goroutine.
func (s *source) stop() {
	s.stopOnce.Do(func() {
		if s.cancel == nil {
			close(s.done)
			return
		}
		s.cancel()
		<-s.done
	})
}

func (s *source) run(ctx context.Context) {
	defer close(s.done)
	// Frames and audio packets are due at fixed times from the start: when
	// the process was not scheduled in time, the late ones go at once (up
	// to maxBehind), so the bitrate holds on a busy machine.
	frame := newSchedule(time.Second / time.Duration(s.cfg.FPS))
	defer frame.stop()
	var audio <-chan time.Time
	var audioSched *schedule
	if s.cfg.Audio && s.audioSink != nil {
		audioSched = newSchedule(20 * time.Millisecond)
		defer audioSched.stop()
		audio = audioSched.c()
	}
	// Random starting points, as a browser's.
	r := rand.New(rand.NewPCG(uint64(s.pub), 2))
	vseq, aseq := uint16(r.Uint32()), uint16(r.Uint32())
	vts, ats := r.Uint32(), r.Uint32()
	picture := uint16(r.Uint32()) & 0x7fff
	vpkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SSRC: s.videoSSRC}}
	apkt := &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SSRC: s.audioSSRC}}
	for {
		select {
		case <-ctx.Done():
			return
		case <-frame.c():
			frame.next()
			s.framesSkipped.Store(int64(frame.skipped))
			if s.videoSink == nil {
				continue
			}
			key := s.keyframe.Swap(false)
			n := packetsPerFrame(s.frameBytes, s.cfg.MaxPayload)
			now := time.Now()
			for i := range n {
				// Equal shares of the frame, the remainder on the first ones.
				data := s.frameBytes / n
				if i < s.frameBytes%n {
					data++
				}
				b := s.videoBuf[:max(vp8DescriptorSize+data, minPayload)]
				b[0] = 0x80 // X
				if i == 0 {
					b[0] |= 0x10 // S: start of the frame's first partition
				}
				b[1] = 0x80 // I: picture id follows
				b[2], b[3] = 0x80|byte(picture>>8), byte(picture)
				if i == 0 {
					putVP8Header(b[vp8DescriptorSize:], key)
				}
				putProbe(b, streamKey{s.pub, kindVideo}, s.videoSent.Load(), now)
				vpkt.SequenceNumber, vpkt.Timestamp, vpkt.Marker = vseq, vts, i == n-1
				vpkt.Payload = b
				s.videoSink(vpkt)
				s.videoSent.Add(1)
				vseq++
			}
			vts += uint32(90000 / s.cfg.FPS)
			picture = (picture + 1) & 0x7fff
		case <-audio:
			audioSched.next()
			b := s.audioBuf
			b[0] = 0xfc // TOC: CELT fullband 20 ms, stereo, one frame
			putProbe(b, streamKey{s.pub, kindAudio}, s.audioSent.Load(), time.Now())
			apkt.SequenceNumber, apkt.Timestamp, apkt.Payload = aseq, ats, b
			s.audioSink(apkt)
			s.audioSent.Add(1)
			aseq++
			ats += 960
		}
	}
}

// schedule is a timer that fires at start + n×interval for n = 1, 2, ...
// When it falls more than maxBehind intervals behind, it skips ahead.
type schedule struct {
	interval time.Duration
	due      time.Time
	timer    *time.Timer
	skipped  int // intervals given up
}

const maxBehind = 5

func newSchedule(interval time.Duration) *schedule {
	return &schedule{interval: interval, due: time.Now().Add(interval), timer: time.NewTimer(interval)}
}

func (s *schedule) c() <-chan time.Time { return s.timer.C }

// next arms the timer for the following due time; call it each time c fired.
func (s *schedule) next() {
	s.due = s.due.Add(s.interval)
	now := time.Now()
	if behind := now.Sub(s.due); behind > maxBehind*s.interval {
		s.skipped += int(behind / s.interval)
		s.due = now
	}
	s.timer.Reset(max(s.due.Sub(now), 0))
}

func (s *schedule) stop() { s.timer.Stop() }

// putVP8Header writes the start of a VP8 frame: the 3-byte frame tag (show
// frame, version 0, the first partition size left 0) and, for a keyframe,
// the start code and a 640×480 size.
func putVP8Header(b []byte, key bool) {
	b[0], b[1], b[2] = 0x10, 0, 0 // show_frame
	if !key {
		b[0] |= 0x01 // inter frame
		return
	}
	copy(b[3:], []byte{0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01})
}

// meter gathers what the receivers of one phase see while the window is
// open: sequence number gaps and one-way latency (sender and receivers share
// the clock).
type meter struct {
	measuring atomic.Bool
	gaps      atomic.Uint64 // sequence numbers skipped (forward jumps)
	late      atomic.Uint64 // packets older than the last one of their SSRC
	latency   histogram
}

// histogram counts latencies: 50 µs buckets below 10 ms, 1 ms buckets up to
// 1 s, and one more for the rest.
type histogram struct {
	buckets [200 + 990 + 1]atomic.Uint64
}

func (h *histogram) add(d time.Duration) {
	var i int
	switch us := d.Microseconds(); {
	case us < 0:
		i = 0
	case us < 10_000:
		i = int(us / 50)
	case us < 1_000_000:
		i = 200 + int(us/1000) - 10
	default:
		i = len(h.buckets) - 1
	}
	h.buckets[i].Add(1)
}

// quantile returns the upper bound of the bucket that holds quantile q
// (just above 1 s when it is beyond the buckets), and false when nothing
// was counted.
func (h *histogram) quantile(q float64) (time.Duration, bool) {
	var total uint64
	for i := range h.buckets {
		total += h.buckets[i].Load()
	}
	if total == 0 {
		return 0, false
	}
	want := uint64(q*float64(total-1)) + 1
	var n uint64
	for i := range h.buckets {
		if n += h.buckets[i].Load(); n >= want {
			switch {
			case i < 200:
				return time.Duration(i+1) * 50 * time.Microsecond, true
			case i < len(h.buckets)-1:
				return time.Duration(i-200+11) * time.Millisecond, true
			}
			return time.Second + time.Millisecond, true // beyond the buckets
		}
	}
	return time.Second + time.Millisecond, true
}

// receiver is what one participant receives: per publisher stream, which
// packets arrived. It is ready when every stream it should get has brought
// readyPackets packets.
type receiver struct {
	self  int // the publisher this participant is, or -1
	meter *meter

	mu      sync.Mutex
	streams map[streamKey]*recvStream // Guarded by mu.
	want    int                       // streams expected. Static.
	nready  int                       // Guarded by mu.
	ready   chan struct{}             // closed when nready reaches want
}

// readyPackets is how many packets of each stream a receiver must get
// before media counts as flowing.
const readyPackets = 10

func newReceiver(self, want int, m *meter) *receiver {
	r := &receiver{self: self, meter: m, streams: map[streamKey]*recvStream{}, want: want, ready: make(chan struct{})}
	if want == 0 {
		close(r.ready)
	}
	return r
}

// recvStream is one stream as one receiver got it. The bitmap of packet
// indexes makes duplicates (retransmissions) count once.
type recvStream struct {
	mu      sync.Mutex
	bits    []uint64 // Guarded by mu: bit i set when packet i arrived.
	packets int      // Guarded by mu: arrivals, duplicates included.
}

// ssrcState follows one SSRC's sequence numbers. Owned by the goroutine that
// reads that SSRC.
type ssrcState struct {
	have    bool
	lastSeq uint16
}

// handle records one RTP packet.
func (r *receiver) handle(st *ssrcState, pkt []byte, now time.Time) {
	seq, _, payload, ok := rtpPayload(pkt)
	if !ok {
		return
	}
	key, index, sent, ok := readProbe(payload)
	if !ok {
		return
	}
	m := r.meter
	measuring := m.measuring.Load()
	if st.have {
		switch d := int16(seq - st.lastSeq); {
		case d > 0:
			if measuring && d > 1 {
				m.gaps.Add(uint64(d - 1))
			}
			st.lastSeq = seq
		case d < 0 && measuring:
			m.late.Add(1)
		}
	} else {
		st.have, st.lastSeq = true, seq
	}
	if measuring {
		m.latency.add(now.Sub(time.Unix(0, sent)))
	}

	r.mu.Lock()
	s := r.streams[key]
	if s == nil {
		s = &recvStream{}
		r.streams[key] = s
	}
	r.mu.Unlock()

	s.mu.Lock()
	w := int(index / 64)
	if w >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, w+1-len(s.bits)+len(s.bits)/2)...)
	}
	s.bits[w] |= 1 << (index % 64)
	s.packets++
	becameReady := s.packets == readyPackets
	s.mu.Unlock()

	if becameReady {
		r.mu.Lock()
		if r.nready++; r.nready == r.want {
			close(r.ready)
		}
		r.mu.Unlock()
	}
}

// count returns how many distinct packets with index in [lo, hi) of stream k
// arrived.
func (r *receiver) count(k streamKey, lo, hi uint32) uint64 {
	r.mu.Lock()
	s := r.streams[k]
	r.mu.Unlock()
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int
	for i := lo; i < hi; {
		w := int(i / 64)
		if w >= len(s.bits) {
			break
		}
		// The bits of word w from i's to hi's (or the word's end).
		word := s.bits[w] >> (i % 64)
		span := min(64-i%64, hi-i)
		if span < 64 {
			word &= 1<<span - 1
		}
		n += bits.OnesCount64(word)
		i += span
	}
	return uint64(n)
}
