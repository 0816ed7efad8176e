package sfu

import (
	"runtime"

	"github.com/pion/rtp"
)

// fanChunk is how many subscribers of one track a goroutine writes a packet
// to. Writing directly (see downTrack) costs no goroutine wake-up, but one
// goroutine writing to 200 subscribers one after the other takes over a
// millisecond per packet, which the last of them waits, and leaves the other
// cores idle. So a track's forwardLoop writes to the first fanChunk itself
// and hands each further chunk to one of the SFU's fan-out workers.
const fanChunk = 64

// fanQueue bounds the chunks waiting for one fan-out worker.
const fanQueue = 1024

// fanJob is one packet for one chunk of a track's subscribers.
type fanJob struct {
	pkt   *rtp.Packet
	downs []*downTrack // a part of a pubTrack.downs slice, never changed
}

// startFanout starts one fan-out worker per CPU.
func (s *SFU) startFanout() {
	for range runtime.GOMAXPROCS(0) {
		q := make(chan fanJob, fanQueue)
		if !s.spawn(func() { s.fanWorker(q) }) {
			return
		}
		s.fanQueues = append(s.fanQueues, q)
	}
}

func (s *SFU) fanWorker(q <-chan fanJob) {
	for {
		select {
		case <-s.done:
			return
		case j := <-q:
			for _, d := range j.downs {
				d.enqueue(j.pkt)
			}
		}
	}
}

// fanOut sends pkt to every subscriber in downs: the chunks after the first
// through the workers (chunk i always to the same worker, so each
// subscriber's packets stay in order while the room does not change), the
// first here.
func (s *SFU) fanOut(pkt *rtp.Packet, downs []*downTrack) {
	if n := len(s.fanQueues); n > 0 {
		for i := fanChunk; i < len(downs); i += fanChunk {
			chunk := downs[i:min(i+fanChunk, len(downs))]
			select {
			case s.fanQueues[(i/fanChunk-1)%n] <- fanJob{pkt: pkt, downs: chunk}:
			default:
				s.stats.dropped.Add(uint64(len(chunk)))
			}
		}
		downs = downs[:min(fanChunk, len(downs))]
	}
	for _, d := range downs {
		d.enqueue(pkt)
	}
}
