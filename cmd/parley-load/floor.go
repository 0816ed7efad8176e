package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pion/rtp"
)

// The floor is what forwarding costs without WebRTC: a relay process that
// receives each publisher's RTP over plain UDP and writes it, unchanged and
// unencrypted, to every other participant's UDP socket, one WriteTo each.
// Same packets, same fan-out, same socket buffer sizes as the SFU's media
// port; no ICE, DTLS, SRTP, RTCP, interceptors or queues.

// relayFlag, as the first argument, makes this program the floor relay.
const relayFlag = "-floor-relay"

// Control messages of the relay: 4 bytes, never RTP (version 2 has the top
// bits 10; 'J' and 'S' are 01).
var (
	relayJoin = []byte("JOIN") // add the sender to the room; echoed back
	relayStat = []byte("STAT") // answered with 8 bytes: packets written so far
)

// relayBufferSize matches the SFU's UDP socket buffers (sfu/listen.go).
const relayBufferSize = 4 << 20

// runRelay is the relay process: it prints its address on stdout and
// forwards until its stdin closes (the tool ends it that way, or by dying).
func runRelay() error {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	_ = conn.SetReadBuffer(relayBufferSize)
	_ = conn.SetWriteBuffer(relayBufferSize)
	fmt.Printf("floor-relay %s\n", conn.LocalAddr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	var members []netip.AddrPort
	var written uint64
	buf := make([]byte, 2048)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return err
		}
		b := buf[:n]
		switch {
		case n == 4 && string(b) == string(relayJoin):
			if !containsAddr(members, from) {
				members = append(members, from)
			}
			_, _ = conn.WriteToUDPAddrPort(relayJoin, from)
		case n == 4 && string(b) == string(relayStat):
			var reply [8]byte
			binary.BigEndian.PutUint64(reply[:], written)
			_, _ = conn.WriteToUDPAddrPort(reply[:], from)
		case n >= 12 && b[0]>>6 == 2:
			for _, m := range members {
				if m == from {
					continue
				}
				if _, err := conn.WriteToUDPAddrPort(b, m); err == nil {
					written++
				}
			}
		}
	}
}

func containsAddr(list []netip.AddrPort, a netip.AddrPort) bool {
	for _, x := range list {
		if x == a {
			return true
		}
	}
	return false
}

// relay is a running relay process, seen from the tool.
type relay struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   string
	addr  netip.AddrPort
	ctl   *net.UDPConn // asks for the counter
	done  chan struct{}
}

// startRelay runs this program as the relay and waits for its address.
func startRelay() (*relay, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, relayFlag)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start floor relay: %w", err)
	}
	r := &relay{cmd: cmd, stdin: stdin, pid: strconv.Itoa(cmd.Process.Pid), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(r.done)
	}()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		a, err := netip.ParseAddrPort(strings.TrimPrefix(l, "floor-relay "))
		if err != nil {
			r.stop()
			return nil, fmt.Errorf("floor relay said %q", l)
		}
		r.addr = a
	case <-r.done:
		return nil, errors.New("floor relay exited at start")
	case <-time.After(10 * time.Second):
		r.stop()
		return nil, errors.New("floor relay did not start within 10 s")
	}
	if r.ctl, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		r.stop()
		return nil, err
	}
	return r, nil
}

// forwarded asks the relay how many packets it has written.
func (r *relay) forwarded() (uint64, error) {
	buf := make([]byte, 64)
	for range 5 {
		if _, err := r.ctl.WriteToUDPAddrPort(relayStat, r.addr); err != nil {
			return 0, err
		}
		_ = r.ctl.SetReadDeadline(time.Now().Add(time.Second))
		n, err := r.ctl.Read(buf)
		if err == nil && n == 8 {
			return binary.BigEndian.Uint64(buf), nil
		}
	}
	return 0, errors.New("floor relay does not answer")
}

// stop ends the relay by closing its stdin, then kills it if need be.
func (r *relay) stop() {
	_ = r.stdin.Close()
	select {
	case <-r.done:
	case <-time.After(3 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	if r.ctl != nil {
		_ = r.ctl.Close()
	}
}

// floorPeer is a participant of the floor: one UDP socket, a source when it
// publishes, and a receiver.
type floorPeer struct {
	conn *net.UDPConn
	rx   *receiver
	src  *source
	done chan struct{}
}

// joinFloor opens a participant's socket and registers it with the relay.
func joinFloor(r *relay, src *source, rx *receiver) (*floorPeer, error) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	fp := &floorPeer{conn: conn, rx: rx, src: src, done: make(chan struct{})}
	buf := make([]byte, 16)
	joined := false
	for range 5 {
		if _, err := conn.WriteToUDPAddrPort(relayJoin, r.addr); err != nil {
			conn.Close()
			return nil, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		if n, err := conn.Read(buf); err == nil && string(buf[:n]) == string(relayJoin) {
			joined = true
			break
		}
	}
	if !joined {
		conn.Close()
		return nil, errors.New("floor relay does not answer JOIN")
	}
	_ = conn.SetReadDeadline(time.Time{})
	if src != nil {
		wire := make([]byte, 1600)
		sink := func(pkt *rtp.Packet) {
			n, err := pkt.MarshalTo(wire)
			if err == nil {
				_, _ = conn.WriteToUDPAddrPort(wire[:n], r.addr)
			}
		}
		src.videoSink, src.audioSink = sink, sink
	}
	go fp.readLoop()
	return fp, nil
}

func (fp *floorPeer) readLoop() {
	defer close(fp.done)
	buf := make([]byte, 2048)
	states := map[uint32]*ssrcState{}
	for {
		n, err := fp.conn.Read(buf)
		if err != nil {
			return
		}
		_, ssrc, _, ok := rtpPayload(buf[:n])
		if !ok {
			continue
		}
		st := states[ssrc]
		if st == nil {
			st = &ssrcState{}
			states[ssrc] = st
		}
		fp.rx.handle(st, buf[:n], time.Now())
	}
}

func (fp *floorPeer) close() {
	_ = fp.conn.Close()
	<-fp.done
}
