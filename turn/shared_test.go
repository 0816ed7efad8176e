package turn

import (
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/parley-chat/parley/config"
)

// TestSharedTLS: connections that another server accepted on its TLS port
// (cmd/parley's HTTPS port) and handed over in Listeners.SharedTLS are
// served as TURN over TLS; the port gets a turns: URL; Close ends them.
func TestSharedTLS(t *testing.T) {
	cert, roots := selfSignedCert(t)
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := raw.Addr().(*net.TCPAddr).Port

	cfg := config.Default().TURN
	cfg.Listen, cfg.Secret = "127.0.0.1:0", testSecret
	cfg.AllowPeers = []string{"127.0.0.0/8"}
	ls, err := listen(cfg, false, 1)
	if err != nil {
		t.Fatal(err)
	}
	ls.SharedTLS = tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	s, err := New(cfg, ls, Options{PublicIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			s.Close()
		}
	})

	if got := s.Endpoint().SharedTLSPort; got != port {
		t.Errorf("Endpoint().SharedTLSPort = %d, want %d", got, port)
	}
	want := "turns:localhost:" + strconv.Itoa(port) + "?transport=tcp"
	servers := NewProvider(cfg, s, "localhost").ICEServers("alice")
	if len(servers) != 2 || !slices.Contains(servers[1].URLs, want) {
		t.Errorf("ICE servers %+v do not contain %s", servers, want)
	}

	conn, err := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	u, p := Credentials(testSecret, "alice", time.Hour, time.Now())
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: raw.Addr().String(),
		TURNServerAddr: raw.Addr().String(),
		Conn:           pionturn.NewSTUNConn(conn),
		Username:       u,
		Password:       p,
		LoggerFactory:  NewLoggerFactory(testLogger(t).With("side", "client")),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay := allocate(t, c)
	echo := startEcho(t, "127.0.0.1")
	roundTrip(t, relay, echo.addr(), []byte("over the shared port"))
	if st := s.Stats(); st.TCPConnections != 1 || st.Allocations != 1 {
		t.Errorf("stats %+v, want 1 connection and 1 allocation", st)
	}

	closed = true
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("the connection is still open after Close")
	}
	if _, err := net.DialTimeout("tcp", raw.Addr().String(), time.Second); err == nil {
		t.Error("the shared listener still accepts after Close")
	}
}
