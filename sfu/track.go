package sfu

import (
	"errors"
	"io"
	"math"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Keyframe requests and bitrate limits sent to publishers.
const (
	// pliInterval is the least time between two keyframe requests for one
	// track: each keyframe costs the publisher a burst of bitrate, and a room
	// of subscribers asking at once needs only one.
	pliInterval = 500 * time.Millisecond
	// pliIntervalNew is that least time when the request is for a subscriber
	// that has just started receiving: no keyframe sent so far reached it,
	// and its first picture waits for one. Chrome ignores keyframe requests
	// within 300 ms of its last keyframe, hence a little more than that.
	pliIntervalNew = 350 * time.Millisecond
	// audioAllowance is added to a publisher's bitrate limit per audio track:
	// browsers apply REMB to everything they send on the connection.
	audioAllowance = 64_000
	// minREMB is the least bitrate a publisher is asked to go down to.
	minREMB = 100_000
)

// maxReadErrors is how many read errors in a row end a read loop that did
// not see its stream closed.
const maxReadErrors = 100

// historySize is how many packets of each video track can be resent on a
// subscriber's NACK: about 8 s of 1 Mbit/s video, 3 s of a 2.5 Mbit/s
// screen share. A power of two.
const historySize = 1024

// pubTrack is a track a participant publishes, and the forwarding of it to
// the other participants.
type pubTrack struct {
	// Static after construction.
	owner    *Participant
	remote   *webrtc.TrackRemote
	receiver *webrtc.RTPReceiver
	id       string // the forwarded track id: "audio", "video", or kind-mid for more
	kind     webrtc.RTPCodecType
	codec    webrtc.RTPCodecParameters
	ssrc     uint32
	exts     []webrtc.RTPHeaderExtensionParameter // negotiated with the publisher

	// downs are the subscribers' forwards. Copy on write under mu; the read
	// loop loads it once per packet without locking.
	downs atomic.Pointer[[]*downTrack]

	// history holds the last historySize video packets by sequence number,
	// for resending what a subscriber NACKs (see downTrack.rtcpLoop). One
	// history per track, shared by every subscriber: the packets are the
	// ones forwarded, read-only, so keeping them costs no copy. Written by
	// the read loop only.
	history [historySize]atomic.Pointer[rtp.Packet]

	mu       sync.Mutex
	closed   bool        // Guarded by mu.
	lastPLI  time.Time   // Guarded by mu.
	pliTimer *time.Timer // Guarded by mu: a keyframe request is scheduled,
	pliDue   time.Time   // for then. Guarded by mu.
}

func newPubTrack(owner *Participant, remote *webrtc.TrackRemote, recv *webrtc.RTPReceiver) *pubTrack {
	t := &pubTrack{
		owner:    owner,
		remote:   remote,
		receiver: recv,
		kind:     remote.Kind(),
		codec:    remote.Codec(),
		ssrc:     uint32(remote.SSRC()),
		exts:     recv.GetParameters().HeaderExtensions,
	}
	t.downs.Store(&[]*downTrack{})
	t.id = t.kind.String() + "-" + remote.ID()
	// The browser's first m-line of a kind is its camera or microphone:
	// "audio" and "video". Any other (a screen share) is named after its mid.
	first := true
	for _, tr := range owner.pc.GetTransceivers() {
		if tr.Kind() != t.kind {
			continue
		}
		if tr.Receiver() == recv {
			if first {
				t.id = t.kind.String()
			} else {
				t.id = t.kind.String() + "-" + tr.Mid()
			}
			break
		}
		first = false
	}
	return t
}

// attach adds a subscriber's forward, unless the track has ended.
func (t *pubTrack) attach(d *downTrack) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	downs := append(slices.Clone(*t.downs.Load()), d)
	t.downs.Store(&downs)
	return true
}

// detach removes a subscriber's forward.
func (t *pubTrack) detach(d *downTrack) {
	t.mu.Lock()
	defer t.mu.Unlock()
	downs := slices.DeleteFunc(slices.Clone(*t.downs.Load()), func(x *downTrack) bool { return x == d })
	t.downs.Store(&downs)
}

// close marks the track ended: no new subscribers, no more keyframe
// requests. Subscribers drop their forwards when they reconcile.
func (t *pubTrack) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	if t.pliTimer != nil {
		t.pliTimer.Stop()
		t.pliTimer = nil
	}
}

// forwardQueue bounds the packets read from a publisher and not yet
// forwarded: a second of a 1,000-packet/s screen share.
const forwardQueue = 1024

// readLoop reads the publisher's packets until the track ends and hands
// them to forwardLoop. Reading is kept apart from forwarding so that a
// packet is read when it arrives however many subscribers the last one went
// to: the TWCC interceptor stamps arrival times as packets are read, and the
// publisher's congestion control reads a late stamp as network delay.
func (t *pubTrack) readLoop() {
	fwd := make(chan []byte, forwardQueue)
	if !t.owner.sfu.spawn(func() { t.forwardLoop(fwd) }) {
		return
	}
	defer close(fwd)
	buf := make([]byte, 1600)
	errs := 0
	for {
		n, _, err := t.remote.Read(buf)
		if err != nil {
			if errs++; isClosed(err) || errs > maxReadErrors {
				return
			}
			continue
		}
		errs = 0
		t.owner.heard.Store(time.Now().UnixNano())
		// One copy per packet, shared read-only by every subscriber.
		data := make([]byte, n)
		copy(data, buf[:n])
		select {
		case fwd <- data:
		default:
			t.owner.sfu.stats.dropped.Add(1)
		}
	}
}

// forwardLoop sends each packet to every subscriber until readLoop closes
// fwd. It never waits for one subscriber (see downTrack.enqueue).
func (t *pubTrack) forwardLoop(fwd <-chan []byte) {
	for data := range fwd {
		pkt := &rtp.Packet{}
		if err := pkt.Unmarshal(data); err != nil {
			continue
		}
		if t.kind == webrtc.RTPCodecTypeVideo {
			t.history[pkt.SequenceNumber%historySize].Store(pkt)
		}
		t.owner.sfu.fanOut(pkt, *t.downs.Load())
	}
}

// recent returns the packet with sequence number seq if it is still in the
// history.
func (t *pubTrack) recent(seq uint16) *rtp.Packet {
	if pkt := t.history[seq%historySize].Load(); pkt != nil && pkt.SequenceNumber == seq {
		return pkt
	}
	return nil
}

// rtcpLoop reads the publisher's RTCP (sender reports) so that the report
// interceptor can answer them with receiver reports that carry the round
// trip time.
func (t *pubTrack) rtcpLoop() {
	buf := make([]byte, 1500)
	errs := 0
	for {
		if _, _, err := t.receiver.Read(buf); err != nil {
			if errs++; isClosed(err) || errs > maxReadErrors {
				return
			}
			continue
		}
		errs = 0
	}
}

// requestKeyframe asks the publisher for a keyframe, at most once per
// interval (pliInterval, or pliIntervalNew for a new subscriber): a request
// within the interval is sent at its end (one for all that came meanwhile),
// so none is lost and a crowd asking at once costs one keyframe.
func (t *pubTrack) requestKeyframe(interval time.Duration) {
	if t.kind != webrtc.RTPCodecTypeVideo {
		return
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	wait := interval - time.Since(t.lastPLI)
	if t.pliTimer != nil {
		// One is scheduled; a new subscriber may need it sooner.
		if t.pliDue.Sub(time.Now()) > max(wait, 0) && t.pliTimer.Stop() {
			t.pliTimer = nil
		} else {
			t.mu.Unlock()
			return
		}
	}
	if wait > 0 {
		t.pliDue = time.Now().Add(wait)
		t.pliTimer = time.AfterFunc(wait, t.sendScheduledPLI)
		t.mu.Unlock()
		return
	}
	t.lastPLI = time.Now()
	t.mu.Unlock()
	t.sendPLI()
}

func (t *pubTrack) sendScheduledPLI() {
	t.mu.Lock()
	t.pliTimer = nil
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.lastPLI = time.Now()
	t.mu.Unlock()
	t.sendPLI()
}

func (t *pubTrack) sendPLI() {
	if writeRTCP(t.owner, &rtcp.PictureLossIndication{MediaSSRC: t.ssrc}) {
		t.owner.sfu.stats.plisSent.Add(1)
	}
}

// sendREMB tells publisher p the bitrate its subscribers can take: for each
// of its video tracks the smallest share any subscriber's browser estimated
// (its downlink estimate divided among the videos it receives), summed,
// plus room for its audio. Only when every video track has an estimate:
// REMB limits all the publisher sends, and a track nobody measured must not
// be limited by the others.
func (p *Participant) sendREMB(tracks []*pubTrack, now time.Time) {
	var total float64
	var ssrcs []uint32
	for _, t := range tracks {
		if t.kind == webrtc.RTPCodecTypeAudio {
			total += audioAllowance
			continue
		}
		least := math.Inf(1)
		for _, d := range *t.downs.Load() {
			if share, ok := d.sub.rembShare(now); ok && share < least {
				least = share
			}
		}
		if math.IsInf(least, 1) {
			return
		}
		total += least
		ssrcs = append(ssrcs, t.ssrc)
	}
	if len(ssrcs) == 0 {
		return
	}
	total = max(total, minREMB)
	if writeRTCP(p, &rtcp.ReceiverEstimatedMaximumBitrate{Bitrate: float32(total), SSRCs: ssrcs}) {
		p.sfu.stats.rembsSent.Add(1)
	}
}

// isClosed reports whether a read error means the stream is gone.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, net.ErrClosed)
}
