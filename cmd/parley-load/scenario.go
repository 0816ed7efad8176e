package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// scenario is P publishers and K subscribers in one room.
type scenario struct{ pubs, subs int }

func (s scenario) String() string { return fmt.Sprintf("%dx%d", s.pubs, s.subs) }

// participants is everyone in the room: publishers receive each other too.
func (s scenario) participants() int { return s.pubs + s.subs }

func parseScenarios(list string) ([]scenario, error) {
	var out []scenario
	for _, f := range strings.Split(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, k, ok := strings.Cut(f, "x")
		pubs, err1 := strconv.Atoi(p)
		subs, err2 := strconv.Atoi(k)
		if !ok || err1 != nil || err2 != nil || pubs < 1 || subs < 0 || pubs+subs < 2 {
			return nil, fmt.Errorf("scenario %q: want PUBLISHERSxSUBSCRIBERS, like 1x50", f)
		}
		out = append(out, scenario{pubs, subs})
	}
	if len(out) == 0 {
		return nil, errors.New("no scenario")
	}
	return out, nil
}

// options are the settings of a run.
type options struct {
	duration, warmup, drain time.Duration
	setupTimeout            time.Duration
	joinConcurrency         int
	media                   mediaConfig
	parleyBin               string
	floor                   bool
	perfDir                 string
	log                     *slog.Logger
	verbose                 bool // the server's log is shown
}

// result is what one scenario measured.
type result struct {
	sc         scenario
	setup      time.Duration // until every participant received every stream
	sfu, floor phaseResult
	hasFloor   bool
	rssBefore  int64 // parley's RSS before any client
	rssDuring  int64 // at the end of the window
	forwards   int   // forwarded tracks (track × receiver) then
	perfReport string
}

// phaseResult is one window of measurement, SFU or floor.
type phaseResult struct {
	window time.Duration
	sent   uint64 // packets the publishers generated
	// framesSkipped are video frames the publishers did not send because
	// the load generator was not scheduled for too long.
	framesSkipped int64
	expected      uint64 // sent × receivers of each stream
	received      uint64 // distinct packets received (of those sent in the window)
	forwarded     uint64 // packets the server (relay) wrote
	gaps          uint64 // sequence numbers skipped, as receivers saw them
	late          uint64 // packets that came after a later one of their SSRC
	cpu           time.Duration
	toolCPU       time.Duration
	machine       machineCPU
	p50, p99      time.Duration
	counters      map[string]float64 // deltas of the server's other counters
}

func (r phaseResult) loss() float64 {
	if r.expected == 0 {
		return 0
	}
	return 1 - float64(r.received)/float64(r.expected)
}

func (r phaseResult) cpuPerPacket() time.Duration {
	if r.forwarded == 0 {
		return 0
	}
	return r.cpu / time.Duration(r.forwarded)
}

func (r phaseResult) perSecond(n uint64) float64 { return float64(n) / r.window.Seconds() }

// phase is what measure needs of a running SFU or floor.
type phase struct {
	sources  []*source
	rxs      []*receiver
	meter    *meter
	pid      string
	counters func(context.Context) (map[string]float64, error)
	fwdKey   string // the counter of packets written
}

// measure opens the window for d, then waits drain for packets in flight
// and counts.
func (ph *phase) measure(ctx context.Context, d, drain time.Duration, during func()) (phaseResult, error) {
	var r phaseResult
	type marks struct {
		video, audio []uint32
		skipped      int64
	}
	mark := func() marks {
		var m marks
		for _, s := range ph.sources {
			m.video = append(m.video, s.videoSent.Load())
			m.audio = append(m.audio, s.audioSent.Load())
			m.skipped += s.framesSkipped.Load()
		}
		return m
	}
	type usage struct {
		cpu, tool time.Duration
		machine   machineCPU
		counters  map[string]float64
	}
	read := func() (usage, error) {
		var u usage
		var err error
		if u.counters, err = ph.counters(ctx); err != nil {
			return u, err
		}
		if u.cpu, err = cpuTime(ph.pid); err != nil {
			return u, err
		}
		if u.tool, err = cpuTime("self"); err != nil {
			return u, err
		}
		u.machine, err = readMachineCPU()
		return u, err
	}

	lo := mark()
	u0, err := read()
	if err != nil {
		return r, err
	}
	start := time.Now()
	ph.meter.measuring.Store(true)
	if during != nil {
		go during()
	}
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(d):
	}
	hi := mark()
	u1, err := read()
	if err != nil {
		return r, err
	}
	r.window = time.Since(start)
	ph.meter.measuring.Store(false)
	select {
	case <-ctx.Done():
		return r, ctx.Err()
	case <-time.After(drain):
	}

	r.cpu = u1.cpu - u0.cpu
	r.toolCPU = u1.tool - u0.tool
	r.machine = machineCPU{busy: u1.machine.busy - u0.machine.busy, total: u1.machine.total - u0.machine.total}
	r.counters = map[string]float64{}
	for k, v := range u1.counters {
		r.counters[k] = v - u0.counters[k]
	}
	r.forwarded = uint64(r.counters[ph.fwdKey])
	r.framesSkipped = hi.skipped - lo.skipped
	// Every packet a publisher sent in the window, once per participant
	// but itself.
	count := func(k streamKey, lo, hi uint32) {
		n := uint64(hi - lo)
		r.sent += n
		for _, rx := range ph.rxs {
			if rx.self != int(k.pub) {
				r.expected += n
				r.received += rx.count(k, lo, hi)
			}
		}
	}
	for i, s := range ph.sources {
		count(streamKey{s.pub, kindVideo}, lo.video[i], hi.video[i])
		if s.cfg.Audio {
			count(streamKey{s.pub, kindAudio}, lo.audio[i], hi.audio[i])
		}
	}
	r.gaps, r.late = ph.meter.gaps.Load(), ph.meter.late.Load()
	r.p50, _ = ph.meter.latency.quantile(0.50)
	r.p99, _ = ph.meter.latency.quantile(0.99)
	return r, nil
}

// streamsPerPublisher is 1 (video) or 2 (and audio).
func (o *options) streamsPerPublisher() int {
	if o.media.Audio {
		return 2
	}
	return 1
}

// runSFU measures the scenario through a fresh parley process.
func runSFU(ctx context.Context, o *options, sc scenario, res *result) error {
	dataDir, err := os.MkdirTemp("", "parley-load-data-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	var echo io.Writer
	if o.verbose {
		echo = os.Stderr
	}
	srv, err := startParley(o.parleyBin, dataDir, sc.participants()+8, echo, nil)
	if err != nil {
		return err
	}
	defer srv.stop()
	room, err := srv.createRoom(ctx)
	if err != nil {
		return err
	}
	if res.rssBefore, err = rss(srv.pid); err != nil {
		return err
	}
	api, err := newAPI(o.log)
	if err != nil {
		return err
	}

	m := &meter{}
	per := o.streamsPerPublisher()
	var (
		mu    sync.Mutex
		peers []*peer
	)
	var sources []*source
	var rxs []*receiver
	defer func() {
		for _, s := range sources {
			s.stop()
		}
		var wg sync.WaitGroup
		for _, p := range peers {
			wg.Go(p.close)
		}
		wg.Wait()
	}()

	setupStart := time.Now()
	setupCtx, cancel := context.WithTimeout(ctx, o.setupTimeout)
	defer cancel()
	// Publishers first, one after the other, each sending once connected.
	for i := range sc.pubs {
		src := newSource(o.media, i)
		rx := newReceiver(i, (sc.pubs-1)*per, m)
		p, err := dialPeer(setupCtx, api, srv.url, room, fmt.Sprintf("pub-%d", i), src, rx, o.log)
		if err != nil {
			return err
		}
		peers = append(peers, p)
		sources, rxs = append(sources, src), append(rxs, rx)
		select {
		case <-p.connected:
		case <-setupCtx.Done():
			return fmt.Errorf("publisher %d not connected within %v\n%s", i, o.setupTimeout, srv.logs)
		}
		src.start()
	}
	// Then the subscribers, joinConcurrency at a time: each holds its slot
	// until it receives every stream.
	sem := make(chan struct{}, o.joinConcurrency)
	errc := make(chan error, sc.subs)
	var wg sync.WaitGroup
	for j := range sc.subs {
		rx := newReceiver(-1, sc.pubs*per, m)
		rxs = append(rxs, rx)
		select {
		case sem <- struct{}{}:
		case <-setupCtx.Done():
			// The readiness check below reports it.
		}
		if setupCtx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			p, err := dialPeer(setupCtx, api, srv.url, room, fmt.Sprintf("sub-%d", j), nil, rx, o.log)
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			peers = append(peers, p)
			mu.Unlock()
			select {
			case <-rx.ready:
			case <-setupCtx.Done():
			}
		})
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	for i, rx := range rxs {
		select {
		case <-rx.ready:
		case <-setupCtx.Done():
			ready := 0
			for _, rx := range rxs {
				select {
				case <-rx.ready:
					ready++
				default:
				}
			}
			return fmt.Errorf("setup: %d of %d participants receive every stream after %v (participant %d does not)\n%s",
				ready, len(rxs), o.setupTimeout, i, srv.logs)
		}
	}
	res.setup = time.Since(setupStart)
	o.log.Info("everyone receives", "scenario", sc, "setup", res.setup.Round(time.Millisecond))

	if err := sleep(ctx, o.warmup); err != nil {
		return err
	}
	var perf func()
	perfDone := make(chan string, 1)
	if o.perfDir != "" {
		perf = func() {
			report, err := perfRecord(o.perfDir, srv.pid, sc, o.duration)
			if err != nil {
				report = err.Error()
			}
			perfDone <- report
		}
	}
	ph := &phase{sources: sources, rxs: rxs, meter: m, pid: srv.pid, counters: srv.metrics, fwdKey: "parley_sfu_forwarded_packets_total"}
	if res.sfu, err = ph.measure(ctx, o.duration, o.drain, perf); err != nil {
		return err
	}
	if res.rssDuring, err = rss(srv.pid); err != nil {
		return err
	}
	after, err := srv.metrics(ctx)
	if err != nil {
		return err
	}
	res.forwards = int(after["parley_sfu_forwarded_tracks"])
	if perf != nil {
		res.perfReport = <-perfDone
	}
	if srv.exited() {
		return fmt.Errorf("parley exited during the run\n%s", srv.logs)
	}
	for _, p := range peers {
		if errs := p.serverErrors(); len(errs) > 0 {
			o.log.Warn("the server sent errors", "peer", p.name, "errors", errs)
		}
	}
	return nil
}

// runFloor measures the same scenario through the plain UDP relay.
func runFloor(ctx context.Context, o *options, sc scenario, res *result) error {
	r, err := startRelay()
	if err != nil {
		return err
	}
	defer r.stop()
	m := &meter{}
	per := o.streamsPerPublisher()
	var sources []*source
	var rxs []*receiver
	var fps []*floorPeer
	defer func() {
		for _, s := range sources {
			s.stop()
		}
		for _, fp := range fps {
			fp.close()
		}
	}()
	for i := range sc.participants() {
		var src *source
		var rx *receiver
		if i < sc.pubs {
			src = newSource(o.media, i)
			rx = newReceiver(i, (sc.pubs-1)*per, m)
			sources = append(sources, src)
		} else {
			rx = newReceiver(-1, sc.pubs*per, m)
		}
		fp, err := joinFloor(r, src, rx)
		if err != nil {
			return err
		}
		fps, rxs = append(fps, fp), append(rxs, rx)
	}
	for _, s := range sources {
		s.start()
	}
	readyCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, rx := range rxs {
		select {
		case <-rx.ready:
		case <-readyCtx.Done():
			return errors.New("floor: not every participant receives every stream within 10 s")
		}
	}
	if err := sleep(ctx, o.warmup); err != nil {
		return err
	}
	counters := func(context.Context) (map[string]float64, error) {
		n, err := r.forwarded()
		return map[string]float64{"forwarded": float64(n)}, err
	}
	ph := &phase{sources: sources, rxs: rxs, meter: m, pid: r.pid, counters: counters, fwdKey: "forwarded"}
	res.floor, err = ph.measure(ctx, o.duration, o.drain, nil)
	res.hasFloor = err == nil
	return err
}

// sleep waits d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
