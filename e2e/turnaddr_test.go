package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// TURN on its default wildcard address (:3478), on a server with a second
// address on its interface, answers every client from the address that
// client sent to. A socket bound to the wildcard would answer from the
// interface's primary address, and the client, whose socket is connected to
// the address it asked (as browsers' are to their TURN server), would never
// see the answer.
func TestTURNAnswersFromTheAddressAsked(t *testing.T) {
	srv, client := newNetns(t), newNetns(t)
	srvIf, _ := link(t, srv, "10.78.0.1/24", client, "10.78.0.9/24")
	srv.run(t, "ip", "addr", "add", "10.78.0.2/24", "dev", srvIf)
	startServer(t, srv, "--listen", "10.78.0.1:8080", "--public-ip", "10.78.0.1")

	for _, ip := range []string{"10.78.0.1", "10.78.0.2"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		conn, err := client.dial(ctx, "udp", net.JoinHostPort(ip, "3478"))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		mapped, err := stunBinding(conn)
		if err != nil {
			t.Errorf("STUN binding to %s:3478: %v", ip, err)
			continue
		}
		if !mapped.IP.Equal(net.ParseIP("10.78.0.9")) {
			t.Errorf("STUN binding to %s:3478: reflexive address %v, want 10.78.0.9", ip, mapped)
		}
	}
}

// stunBinding sends a Binding request on a connected UDP socket, a few
// times, and returns the XOR-MAPPED-ADDRESS of the answer.
func stunBinding(conn net.Conn) (stun.XORMappedAddress, error) {
	var mapped stun.XORMappedAddress
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	buf := make([]byte, 1500)
	var err error
	for range 5 {
		if _, err = conn.Write(req.Raw); err != nil {
			return mapped, err
		}
		_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		var n int
		if n, err = conn.Read(buf); err != nil {
			continue
		}
		res := &stun.Message{Raw: buf[:n]}
		if err = res.Decode(); err != nil {
			return mapped, err
		}
		if res.TransactionID != req.TransactionID || res.Type != stun.BindingSuccess {
			return mapped, fmt.Errorf("answer %v to the Binding request", res)
		}
		return mapped, mapped.GetFrom(res)
	}
	return mapped, err
}
