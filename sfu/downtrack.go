package sfu

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// downTrack forwards one published track to one subscriber. It is the
// webrtc.TrackLocal of the subscriber's sender.
//
// How a packet reaches the subscriber depends on its transport. Over UDP
// (the shared media socket, directly or through a TURN relay) a write never
// waits for this subscriber alone, so the publisher's read loop writes it
// at once: no hand-off, no goroutine to wake per packet and subscriber,
// which is most of the forwarding cost in a big room. Over ICE-TCP a write
// can block when the subscriber's connection does not drain, so the packet
// goes to the downTrack's bounded queue and its own writer goroutine: a
// slow or stalled subscriber delays nobody but itself.
//
// (A shared TrackLocalStaticRTP would write to every subscriber from the
// read loop, one after the other, whatever the transport: one blocked
// write would hold up all of them, and the loop too.)
type downTrack struct {
	// Static after construction.
	pub   *pubTrack
	sub   *Participant
	stats *counters
	queue chan *rtp.Packet
	done  chan struct{} // closed by close: the writer ends

	// Set under sub.negMu before rtcpLoop starts, then static.
	transceiver *webrtc.RTPTransceiver
	sender      *webrtc.RTPSender

	// mu orders Bind and close; enqueue reads the flags without it.
	mu      sync.Mutex
	bound   atomic.Bool // Bind is done: enqueue accepts packets
	stopped atomic.Bool // close has been called
	counted bool        // counted in sub.videoDowns; guarded by mu

	// Set by Bind before bound, then static.
	ssrc   uint32
	pt     uint8
	writer webrtc.TrackLocalWriter
	extMap []extPair // publisher's header extension ID → subscriber's
	absID  uint8     // abs-send-time ID, 0 when not negotiated

	// writeMu orders writes: the read loop's and the NACK resends' when
	// direct, the writer goroutine's when queued, and both while the
	// transport changes. It guards the header scratch buffers.
	writeMu sync.Mutex
	extBuf  []rtp.Extension
	absBuf  [3]byte
}

type extPair struct{ from, to uint8 }

func newDownTrack(t *pubTrack, sub *Participant) *downTrack {
	return &downTrack{
		pub:   t,
		sub:   sub,
		stats: &sub.sfu.stats,
		queue: make(chan *rtp.Packet, sub.sfu.queueSize),
		done:  make(chan struct{}),
	}
}

// ID is the track id the subscriber sees: "audio", "video", or kind-mid for
// a publisher's further tracks (a screen share).
func (d *downTrack) ID() string { return d.pub.id }

// StreamID is the publisher's participant id: the browser's ontrack
// event.streams[0].id tells which participant (tile) a track belongs to.
func (d *downTrack) StreamID() string { return d.pub.owner.id }

// RID is empty: no simulcast.
func (d *downTrack) RID() string { return "" }

// Kind is audio or video.
func (d *downTrack) Kind() webrtc.RTPCodecType { return d.pub.kind }

// Bind is called by pion when the subscriber's answer is applied. It picks
// the negotiated payload type of the publisher's codec and starts the writer.
func (d *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	negotiated := ctx.CodecParameters()
	var codec *webrtc.RTPCodecParameters
	for i := range negotiated {
		if codecMatches(d.pub.codec.RTPCodecCapability, negotiated[i].RTPCodecCapability) {
			codec = &negotiated[i]
			break
		}
	}
	if codec == nil {
		// Not an error, which would fail the whole answer (and the next
		// offer the same way): the subscriber gets nothing on this m-line.
		d.sub.log.Warn("sfu: subscriber lacks the publisher's codec; not forwarded",
			"from", d.pub.owner.id, "track", d.pub.id, "codec", d.pub.codec.MimeType)
		if len(negotiated) == 0 {
			return d.pub.codec, nil
		}
		return negotiated[0], nil
	}
	if !d.bind(ctx, codec) {
		return *codec, nil
	}
	// A new subscriber: ask for a keyframe now, so that its first frame
	// does not wait for the publisher's next one. Unless its connection is
	// still coming up: that keyframe would be lost, and would hold back
	// (rate limit) the one asked for when it is up (see applyState).
	if d.pub.kind == webrtc.RTPCodecTypeVideo && d.sub.connected() {
		d.pub.requestKeyframe(pliIntervalNew)
	}
	return *codec, nil
}

// bind sets up the writer for codec, unless already done or closed.
func (d *downTrack) bind(ctx webrtc.TrackLocalContext, codec *webrtc.RTPCodecParameters) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.bound.Load() || d.stopped.Load() {
		return false
	}
	d.ssrc, d.pt, d.writer = uint32(ctx.SSRC()), uint8(codec.PayloadType), ctx.WriteStream()
	for _, se := range ctx.HeaderExtensions() {
		if se.URI == sdp.ABSSendTimeURI && d.pub.kind == webrtc.RTPCodecTypeVideo {
			d.absID = uint8(se.ID)
		}
		if !forwardedExtensions[se.URI] {
			continue
		}
		for _, pe := range d.pub.exts {
			if pe.URI == se.URI {
				d.extMap = append(d.extMap, extPair{from: uint8(pe.ID), to: uint8(se.ID)})
			}
		}
	}
	if !d.sub.sfu.spawn(d.writeLoop) {
		return false
	}
	d.bound.Store(true)
	if d.pub.kind == webrtc.RTPCodecTypeVideo {
		d.counted = true
		d.sub.videoDowns.Add(1)
	}
	return true
}

// Unbind is called by pion when the sender stops.
func (d *downTrack) Unbind(webrtc.TrackLocalContext) error {
	d.close()
	return nil
}

// close stops the writer. Packets still queued are dropped.
func (d *downTrack) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped.Load() {
		return
	}
	d.stopped.Store(true)
	close(d.done)
	if d.counted {
		d.counted = false
		d.sub.videoDowns.Add(-1)
	}
}

// enqueue sends a packet without ever blocking on this subscriber alone:
// directly when its transport is UDP and nothing is queued before it,
// otherwise through the queue; when the queue is full the packet is dropped
// and counted. It reports whether the packet was sent or queued.
func (d *downTrack) enqueue(pkt *rtp.Packet) bool {
	if !d.bound.Load() || d.stopped.Load() {
		return false
	}
	if d.sub.direct.Load() && len(d.queue) == 0 {
		d.write(pkt)
		return true
	}
	select {
	case d.queue <- pkt:
		return true
	default:
		d.stats.dropped.Add(1)
		return false
	}
}

func (d *downTrack) writeLoop() {
	for {
		select {
		case <-d.done:
			return
		case pkt := <-d.queue:
			d.write(pkt)
		}
	}
}

// write sends one packet with the subscriber's SSRC, payload type and
// header extension IDs. The packet is shared with the other subscribers:
// only the header copy is changed.
func (d *downTrack) write(pkt *rtp.Packet) {
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	h := pkt.Header
	h.SSRC, h.PayloadType = d.ssrc, d.pt
	h.Extension, h.ExtensionProfile, h.Extensions = false, 0, d.extBuf[:0]
	for _, m := range d.extMap {
		if v := pkt.Header.GetExtension(m.from); v != nil {
			_ = h.SetExtension(m.to, v)
		}
	}
	if d.absID != 0 {
		putAbsSendTime(&d.absBuf, time.Now())
		_ = h.SetExtension(d.absID, d.absBuf[:])
	}
	d.extBuf = h.Extensions[:0]
	// pion keeps neither the header nor the payload (SRTP encrypts into
	// its own buffer), so the header buffers can be reused for the next
	// packet.
	if _, err := d.writer.WriteRTP(&h, pkt.Payload); err != nil {
		return
	}
	d.stats.forwardedPackets.Add(1)
	d.stats.forwardedBytes.Add(uint64(h.MarshalSize() + len(pkt.Payload) + int(h.PaddingSize)))
}

// putAbsSendTime writes the abs-send-time extension: 24 bits of the NTP
// time, 6.18 fixed point seconds.
func putAbsSendTime(b *[3]byte, now time.Time) {
	ns := uint64(now.UnixNano())
	ntp := (ns/1e9+0x83AA7E80)<<32 | (ns%1e9)<<32/1e9
	v := ntp >> 14
	b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v)
}

// rtcpLoop reads the subscriber's RTCP for this track until the sender
// stops. NACKed packets still in the track's history are queued again (the
// writer gives them this subscriber's SSRC as for the first send; a full
// queue drops them like any packet); PLI and FIR go on to the publisher,
// REMB to the subscriber's estimate.
func (d *downTrack) rtcpLoop() {
	buf := make([]byte, 1500)
	errs := 0
	for {
		n, _, err := d.sender.Read(buf)
		if err != nil {
			if errs++; isClosed(err) || d.stopped.Load() || errs > maxReadErrors {
				return
			}
			continue
		}
		errs = 0
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, pkt := range pkts {
			switch pkt := pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				d.stats.keyframeRequests.Add(1)
				d.pub.requestKeyframe(pliInterval)
			case *rtcp.ReceiverEstimatedMaximumBitrate:
				d.sub.setREMB(pkt.Bitrate)
			case *rtcp.TransportLayerNack:
				for _, pair := range pkt.Nacks {
					seqs := pair.PacketList()
					d.stats.nacksReceived.Add(uint64(len(seqs)))
					for _, seq := range seqs {
						if p := d.pub.recent(seq); p != nil && d.enqueue(p) {
							d.stats.retransmitted.Add(1)
						}
					}
				}
			}
		}
	}
}
