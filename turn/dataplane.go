package turn

import (
	"encoding/binary"
	"errors"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The data plane relays channel data over UDP, the traffic of every WebRTC
// call through TURN, without pion: a few threads of its own wait in
// epoll_wait on every UDP socket of the server (listening and relay), read
// with recvmmsg, and send each packet on at once with the channel number
// added or taken off. pion still does everything else: it reads what the
// data plane hands up (STUN requests, data of peers without a channel,
// channel numbers it does not know) through the sockets' ReadFrom, and
// answers through their WriteTo.
//
// Why: pion reads each socket with a goroutine, so every packet wakes one
// through Go's network poller, and each wake-up makes the scheduler start
// another thread to look for work. At a few thousand packets a second that
// costs more than the relaying (BenchmarkRelayVsCoturn measured Parley at
// 1.8× coturn's CPU per message, more than half of it in futex, epoll and
// context switches). A thread blocked in epoll_wait is woken by the kernel
// alone, as coturn's are.
//
// The data plane mirrors pion's channel bindings from its events (see
// Server.eventHandler): ChannelBind creates the binding and its permission in
// pion, then the route here; a binding's expiry or its allocation's end
// removes the route. Routes are checked against the relay policy per packet,
// as pion's path does.
//
// Each worker is a goroutine that spends its life in system calls and holds
// its P while it waits in epoll_wait; it leaves at least one P to the rest
// of the process, so the data plane runs only when GOMAXPROCS is 2 or more
// (see useDataPlane), with GOMAXPROCS−1 workers.

// useDataPlane reports whether the server's UDP sockets should be data
// plane sockets.
func useDataPlane() bool { return runtime.GOMAXPROCS(0) >= 2 }

// busyWait is the longest epoll_wait of a worker, in milliseconds, while
// traffic flows: under the 10 ms after which sysmon takes the P of a thread
// in a system call.
const busyWait = 2

// yieldEvery is how often a worker passes through the scheduler. With
// busyWait it stays under sysmon's 10 ms preemption limit.
const yieldEvery = 7 * time.Millisecond

// Batch sizes of one system call.
const (
	recvBatch     = 32
	maxDatagram   = 2048 // more than any MTU; longer datagrams are truncated and dropped
	channelHeader = 4
)

// chanKey names a channel binding from the client's side: the server
// address the client talks to, the client's address, the channel number.
type chanKey struct {
	local, client netip.AddrPort
	number        uint16
}

// chanRoute is where a client's channel data goes.
type chanRoute struct {
	relay  *udpSock
	peer   netip.AddrPort
	peerTo rawAddr
}

// peerRoute is where a peer's data goes: to the client, on its channel.
type peerRoute struct {
	listener *udpSock // a socket of the address the client talks to
	client   netip.AddrPort
	clientTo rawAddr
	number   uint16
}

// dataPlane is the set of workers and the routes.
type dataPlane struct {
	policy *peerPolicy

	mu        sync.Mutex
	workers   []*dpWorker                                 // static after start
	next      int                                         // round robin; guarded by mu
	listeners map[netip.AddrPort]*udpSock                 // one socket per local address; guarded by mu
	byRelay   map[*udpSock][]chanKey                      // routes that go out of each relay socket; guarded by mu
	chans     atomic.Pointer[map[chanKey]*chanRoute]      // copy on write under mu
	relays    atomic.Pointer[map[netip.AddrPort]*udpSock] // by public address; copy on write under mu

	dropped atomic.Uint64 // packets the data plane could not relay or hand up
	wg      sync.WaitGroup
}

// dpWorker is one thread and its epoll set.
type dpWorker struct {
	p     *dataPlane
	epfd  int
	wake  int // eventfd: ends the worker
	mu    sync.Mutex
	socks map[int32]*udpSock // by id; guarded by mu
	ids   int32              // last id given; guarded by mu
}

func newDataPlane(policy *peerPolicy) (*dataPlane, error) {
	p := &dataPlane{policy: policy, listeners: map[netip.AddrPort]*udpSock{}, byRelay: map[*udpSock][]chanKey{}}
	p.chans.Store(&map[chanKey]*chanRoute{})
	p.relays.Store(&map[netip.AddrPort]*udpSock{})
	n := max(runtime.GOMAXPROCS(0)-1, 1)
	for range n {
		w, err := newWorker(p)
		if err != nil {
			p.close()
			return nil, err
		}
		p.workers = append(p.workers, w)
	}
	for _, w := range p.workers {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			w.run()
		}()
	}
	return p, nil
}

func newWorker(p *dataPlane) (*dpWorker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("epoll_create1", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: 0} // id 0: the wake-up
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, os.NewSyscallError("epoll_ctl", err)
	}
	return &dpWorker{p: p, epfd: epfd, wake: wake, socks: map[int32]*udpSock{}}, nil
}

// add gives a socket to a worker. For a relay socket, relay is its conn and
// public the address clients are told.
func (p *dataPlane) add(s *udpSock, role sockRole, relay *relayConn, public netip.AddrPort) error {
	p.mu.Lock()
	w := p.workers[p.next%len(p.workers)]
	p.next++
	switch role {
	case listenSock:
		if _, ok := p.listeners[s.local]; !ok {
			p.listeners[s.local] = s
		}
	case relaySock:
		s.public = unmap(public)
		relays := maps.Clone(*p.relays.Load())
		relays[s.public] = s
		p.relays.Store(&relays)
	}
	p.mu.Unlock()

	s.plane, s.worker, s.role, s.relay = p, w, role, relay
	s.routes.Store(&map[netip.AddrPort]*peerRoute{})
	w.mu.Lock()
	w.ids++
	s.id = w.ids
	w.socks[s.id] = s
	w.mu.Unlock()

	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return net.ErrClosed
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: s.id}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, s.fd, &ev); err != nil {
		return os.NewSyscallError("epoll_ctl", err)
	}
	return nil
}

// remove takes a socket out of its worker and its routes out of the plane.
// The caller holds the socket's write lock.
func (p *dataPlane) remove(s *udpSock) {
	w := s.worker
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
	w.mu.Lock()
	delete(w.socks, s.id)
	w.mu.Unlock()

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.listeners[s.local] == s {
		delete(p.listeners, s.local)
		for _, w := range p.workers { // another socket of the address, if any
			w.mu.Lock()
			for _, o := range w.socks {
				if o.role == listenSock && o.local == s.local && o != s {
					p.listeners[s.local] = o
				}
			}
			w.mu.Unlock()
		}
	}
	if s.role == relaySock && (*p.relays.Load())[s.public] == s {
		relays := maps.Clone(*p.relays.Load())
		delete(relays, s.public)
		p.relays.Store(&relays)
	}
	if keys := p.byRelay[s]; len(keys) > 0 {
		chans := maps.Clone(*p.chans.Load())
		for _, k := range keys {
			delete(chans, k)
		}
		p.chans.Store(&chans)
		delete(p.byRelay, s)
	}
}

// bind adds the route of a channel binding pion made: client at local,
// channel number, relay socket, peer.
func (p *dataPlane) bind(local, client netip.AddrPort, number uint16, relay *udpSock, peer netip.AddrPort) {
	local, client, peer = unmap(local), unmap(client), unmap(peer)
	p.mu.Lock()
	defer p.mu.Unlock()
	listener := p.listeners[local]
	if listener == nil || relay.plane != p {
		return // not ours: pion relays it
	}
	k := chanKey{local: local, client: client, number: number}
	chans := maps.Clone(*p.chans.Load())
	chans[k] = &chanRoute{relay: relay, peer: peer, peerTo: newRawAddr(peer, relay.v6)}
	p.chans.Store(&chans)
	p.byRelay[relay] = append(p.byRelay[relay], k)

	routes := maps.Clone(*relay.routes.Load())
	routes[peer] = &peerRoute{listener: listener, client: client, clientTo: newRawAddr(client, listener.v6), number: number}
	relay.routes.Store(&routes)
}

// unbind removes the route of a channel binding that ended.
func (p *dataPlane) unbind(local, client netip.AddrPort, number uint16) {
	local, client = unmap(local), unmap(client)
	p.mu.Lock()
	defer p.mu.Unlock()
	k := chanKey{local: local, client: client, number: number}
	r, ok := (*p.chans.Load())[k]
	if !ok {
		return
	}
	chans := maps.Clone(*p.chans.Load())
	delete(chans, k)
	p.chans.Store(&chans)
	keys := p.byRelay[r.relay]
	for i, o := range keys {
		if o == k {
			p.byRelay[r.relay] = append(keys[:i:i], keys[i+1:]...)
			break
		}
	}
	routes := maps.Clone(*r.relay.routes.Load())
	if pr := routes[r.peer]; pr != nil && pr.number == number && pr.client == client {
		delete(routes, r.peer)
	}
	r.relay.routes.Store(&routes)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// close ends the workers; their sockets must be closed already or after.
func (p *dataPlane) close() {
	for _, w := range p.workers {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(w.wake, one[:])
	}
	p.wg.Wait()
	for _, w := range p.workers {
		unix.Close(w.epfd)
		unix.Close(w.wake)
	}
}

// mmsghdr is struct mmsghdr of recvmmsg and sendmmsg.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// batch is the buffers of one recvmmsg or sendmmsg call.
type batch struct {
	msgs  [recvBatch]mmsghdr
	iovs  [recvBatch]unix.Iovec
	names [recvBatch]unix.RawSockaddrInet6
	bufs  [recvBatch][maxDatagram]byte
}

// run is the worker's thread: wait, read, relay, until woken to end.
func (w *dpWorker) run() {
	in := new(batch)
	out := new(outBatch)
	events := make([]unix.EpollEvent, 64)
	timeout, lastBusy, lastYield := -1, time.Now(), time.Now()
	for {
		n, err := unix.EpollWait(w.epfd, events, timeout)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		// While traffic flows, wait at most busyWait at a time: a thread
		// in one system call for over 10 ms loses its P to sysmon, which
		// then watches closely for a while, waking every 20 µs (paced
		// traffic, such as all media, pauses that long between bursts).
		// An idle data plane waits for good.
		now := time.Now()
		if n > 0 {
			timeout, lastBusy = busyWait, now
		} else if timeout > 0 && now.Sub(lastBusy) > time.Second {
			timeout = -1
		}
		// A goroutine that never passes through the scheduler looks stuck
		// to sysmon after 10 ms, which then preempts it, takes its P, and
		// again watches closely: yield now and then.
		if now.Sub(lastYield) > yieldEvery {
			runtime.Gosched()
			lastYield = now
		}
		for _, ev := range events[:n] {
			if ev.Fd == 0 {
				return
			}
			w.mu.Lock()
			s := w.socks[ev.Fd]
			w.mu.Unlock()
			if s != nil {
				w.drain(s, in, out)
			}
		}
	}
}

// drain reads what the socket has, a few batches at most (epoll reports it
// again if there is more), and relays or hands up every packet.
func (w *dpWorker) drain(s *udpSock, in *batch, out *outBatch) {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return
	}
	for range 4 {
		n := recvmmsg(s.fd, in)
		if n <= 0 {
			break
		}
		// The packets point into in: sent before the next read.
		for i := range n {
			size := int(in.msgs[i].len)
			from, ok := addrFromRaw(&in.names[i])
			if !ok || size >= maxDatagram {
				w.p.dropped.Add(1)
				continue
			}
			pkt := in.bufs[i][:size]
			if s.role == listenSock {
				w.fromClient(s, pkt, from, out)
			} else {
				w.fromPeer(s, pkt, from, out)
			}
		}
		out.flush(w.p)
		if n < recvBatch {
			break
		}
	}
	s.mu.RUnlock()
}

// fromClient relays a client's channel data to its peer, and hands up
// anything else.
func (w *dpWorker) fromClient(s *udpSock, pkt []byte, from netip.AddrPort, out *outBatch) {
	if len(pkt) < channelHeader || pkt[0]&0xC0 != 0x40 { // not ChannelData (RFC 8656 §12)
		s.handUp(pkt, from)
		return
	}
	number := binary.BigEndian.Uint16(pkt)
	length := int(binary.BigEndian.Uint16(pkt[2:]))
	r := (*w.p.chans.Load())[chanKey{local: s.local, client: from, number: number}]
	if r == nil || channelHeader+length > len(pkt) {
		s.handUp(pkt, from) // pion answers for it (drops it, with a log line)
		return
	}
	rc := r.relay.relay
	if !w.p.policy.permitPacket(r.peer) {
		rc.packetsDenied.Add(1)
		return
	}
	data := pkt[channelHeader : channelHeader+length]
	rc.packetsToPeers.Add(1)
	rc.bytesToPeers.Add(uint64(length))
	if dst := (*w.p.relays.Load())[r.peer]; dst != nil {
		// The peer is another relay of this server (both sides of a call
		// behind TURN here): hand the packet straight to it, as if it had
		// come through the network from this relay's public address.
		dst.mu.RLock()
		if !dst.closed {
			w.fromPeer(dst, data, r.relay.public, out)
		}
		dst.mu.RUnlock()
		return
	}
	out.add(r.relay, data, nil, &r.peerTo)
}

// fromPeer relays a peer's packet to the client on its channel, and hands
// up a packet from a peer without one (pion sends it as a Data indication if
// the peer has a permission).
func (w *dpWorker) fromPeer(s *udpSock, pkt []byte, from netip.AddrPort, out *outBatch) {
	rc := s.relay
	rc.packetsFromPeers.Add(1)
	rc.bytesFromPeers.Add(uint64(len(pkt)))
	r := (*s.routes.Load())[from]
	if r == nil {
		s.handUp(pkt, from)
		return
	}
	var hdr [channelHeader]byte
	binary.BigEndian.PutUint16(hdr[:], r.number)
	binary.BigEndian.PutUint16(hdr[2:], uint16(len(pkt)))
	out.add(r.listener, pkt, hdr[:], &r.clientTo)
}

// outBatch collects the packets of one read to send them with as few
// sendmmsg calls as there are runs of the same socket.
type outBatch struct {
	n     int
	socks [recvBatch]*udpSock
	msgs  [recvBatch]mmsghdr
	iovs  [recvBatch][2]unix.Iovec
	hdrs  [recvBatch][channelHeader]byte
	tos   [recvBatch]rawAddr
}

// add queues pkt, after hdr if any, to to on s. pkt must stay valid until
// flush.
func (o *outBatch) add(s *udpSock, pkt, hdr []byte, to *rawAddr) {
	i := o.n
	o.n++
	o.socks[i] = s
	o.tos[i] = *to
	iov := &o.iovs[i]
	niov := 0
	if hdr != nil {
		copy(o.hdrs[i][:], hdr)
		iov[0].Base = &o.hdrs[i][0]
		iov[0].SetLen(len(hdr))
		niov++
	}
	if len(pkt) > 0 {
		iov[niov].Base = &pkt[0]
		iov[niov].SetLen(len(pkt))
		niov++
	}
	m := &o.msgs[i]
	m.hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&o.tos[i].sa)), Namelen: o.tos[i].len, Iov: &iov[0]}
	m.hdr.SetIovlen(niov)
}

// flush sends everything queued, one sendmmsg per run of packets on the
// same socket. A packet the kernel will not take (a full buffer) is dropped
// and counted.
func (o *outBatch) flush(p *dataPlane) {
	for start := 0; start < o.n; {
		s := o.socks[start]
		end := start + 1
		for end < o.n && o.socks[end] == s {
			end++
		}
		s.mu.RLock()
		if s.closed {
			p.dropped.Add(uint64(end - start))
		} else {
			for i := start; i < end; {
				sent, err := sendmmsg(s.fd, o.msgs[i:end])
				if err != nil || sent == 0 {
					p.dropped.Add(1) // skip the one that failed
					sent = 1
				}
				i += sent
			}
		}
		s.mu.RUnlock()
		start = end
	}
	clear(o.socks[:o.n])
	o.n = 0
}

// recvmmsg reads up to recvBatch datagrams without waiting; it returns how
// many (0 when there are none).
func recvmmsg(fd int, b *batch) int {
	for i := range b.msgs {
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(maxDatagram)
		b.msgs[i].hdr = unix.Msghdr{Name: (*byte)(unsafe.Pointer(&b.names[i])), Namelen: unix.SizeofSockaddrInet6, Iov: &b.iovs[i]}
		b.msgs[i].hdr.SetIovlen(1)
		b.msgs[i].len = 0
	}
	n, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])), recvBatch, unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0
	}
	return int(n)
}

// sendmmsg sends msgs without waiting and returns how many went.
func sendmmsg(fd int, msgs []mmsghdr) (int, error) {
	n, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
