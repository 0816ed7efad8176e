package turn

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

// A data plane socket honours read deadlines, and Close ends a read that
// is waiting.
func TestUDPSockDeadlineAndClose(t *testing.T) {
	s, err := newUDPSock(netip.MustParseAddrPort("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.local.Port() == 0 {
		t.Fatalf("local address %v has no port", s.local)
	}
	buf := make([]byte, 10)
	s.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, _, err := s.ReadFrom(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadFrom after the deadline: %v", err)
	}
	s.SetReadDeadline(time.Time{})

	// Handed-up packets come out of ReadFrom with their sender.
	from := netip.MustParseAddrPort("127.0.0.1:9")
	s.handUp([]byte("hello"), from)
	n, addr, err := s.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "hello" || addr.String() != from.String() {
		t.Fatalf("ReadFrom: %q from %v, %v", buf[:n], addr, err)
	}

	done := make(chan error, 1)
	go func() {
		_, _, err := s.ReadFrom(buf)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadFrom after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ReadFrom still waits after Close")
	}
	if _, err := s.WriteTo([]byte("x"), net.UDPAddrFromAddrPort(from)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close: %v", err)
	}
}
