package turn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	pionturn "github.com/pion/turn/v5"
	"go.uber.org/goleak"

	"github.com/parley-chat/parley/config"
)

func TestMain(m *testing.M) {
	if os.Getenv(relayBenchServerEnv) == "1" {
		if err := runRelayBenchServer(); err != nil {
			fmt.Fprintln(os.Stderr, "relay bench server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

const testSecret = "test-secret"

// testLogger logs to t. Lines that arrive after the test ended (from
// goroutines that outlive Close by a few instructions) are dropped instead
// of panicking. PARLEY_TEST_DEBUG=1 shows debug lines.
func testLogger(t testing.TB) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop) // registered first, so it runs after every later cleanup
	level := slog.LevelInfo
	if os.Getenv("PARLEY_TEST_DEBUG") == "1" {
		level = LevelTrace
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", p)
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// testServer is a server on 127.0.0.1 with its client-side details.
type testServer struct {
	*Server
	cfg     config.TURN
	udpAddr string // also the TCP address
	tlsAddr string // empty without TLS
	roots   *x509.CertPool
}

// startServer runs a server on 127.0.0.1:0 with public IP 127.0.0.1 and the
// test secret; edit changes the settings first.
func startServer(t testing.TB, withTLS bool, edit func(*config.TURN, *Options)) *testServer {
	t.Helper()
	return startServerSockets(t, 0, withTLS, edit)
}

// startServerSockets is startServer with n UDP sockets (0: one per CPU, as
// Listen opens).
func startServerSockets(t testing.TB, n int, withTLS bool, edit func(*config.TURN, *Options)) *testServer {
	t.Helper()
	log := testLogger(t)
	cfg := config.Default().TURN
	cfg.Listen = "127.0.0.1:0"
	cfg.TLSListen = "127.0.0.1:0"
	cfg.Secret = testSecret
	opts := Options{PublicIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	ts := &testServer{}
	if withTLS {
		cert, roots := selfSignedCert(t)
		opts.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ts.roots = roots
	}
	if edit != nil {
		edit(&cfg, &opts)
	}
	if n == 0 {
		n = runtime.GOMAXPROCS(0)
	}
	ls, err := listen(cfg, withTLS, n)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	ts.udpAddr = ls.UDP[0].LocalAddr().String()
	if withTLS {
		ts.tlsAddr = ls.TLS.Addr().String()
	}
	s, err := New(cfg, ls, opts, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	ts.Server, ts.cfg = s, cfg
	return ts
}

// selfSignedCert makes a certificate for localhost, 127.0.0.1 and ::1.
func selfSignedCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
}

// transports are the ways a client reaches the server.
var transports = []string{"udp", "tcp", "tls"}

// dial opens the client side of a transport: a UDP socket, or a TCP or TLS
// connection framed as packets.
func (ts *testServer) dial(t testing.TB, transport string) (net.PacketConn, string) {
	t.Helper()
	var pc net.PacketConn
	addr := ts.udpAddr
	switch transport {
	case "udp":
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pc = c
	case "tcp":
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		pc = pionturn.NewSTUNConn(c)
	case "tls":
		addr = ts.tlsAddr
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ts.roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		pc = pionturn.NewSTUNConn(c)
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	t.Cleanup(func() { pc.Close() })
	return pc, addr
}

// client returns a pion TURN client over transport with the given
// credentials, listening.
func (ts *testServer) client(t testing.TB, transport, username, password string, edit func(*pionturn.ClientConfig)) *pionturn.Client {
	t.Helper()
	pc, addr := ts.dial(t, transport)
	cc := &pionturn.ClientConfig{
		STUNServerAddr: addr,
		TURNServerAddr: addr,
		Conn:           pc,
		Username:       username,
		Password:       password,
		LoggerFactory:  NewLoggerFactory(testLogger(t).With("side", "client")),
		RTO:            200 * time.Millisecond,
	}
	if edit != nil {
		edit(cc)
	}
	c, err := pionturn.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// userClient is a client with fresh valid credentials for participant id.
func (ts *testServer) userClient(t testing.TB, transport, id string) *pionturn.Client {
	u, p := Credentials(testSecret, id, time.Hour, time.Now())
	return ts.client(t, transport, u, p, nil)
}

// allocate allocates a relay and closes it at the end of the test.
func allocate(t testing.TB, c *pionturn.Client) net.PacketConn {
	t.Helper()
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	t.Cleanup(func() { relay.Close() })
	return relay
}

// turnErrorCode returns the STUN error code in err, or 0.
func turnErrorCode(err error) stun.ErrorCode {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return te.ErrorCodeAttr.Code
	}
	return 0
}

// echoPeer is a UDP peer that sends back what it receives.
type echoPeer struct {
	conn     net.PacketConn
	received atomic.Int64
	wg       sync.WaitGroup
}

func startEcho(t testing.TB, ip string) *echoPeer {
	t.Helper()
	c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	return runEcho(t, c)
}

func runEcho(t testing.TB, c net.PacketConn) *echoPeer {
	e := &echoPeer{conn: c}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			e.received.Add(1)
			c.WriteTo(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		c.Close()
		e.wg.Wait()
	})
	return e
}

func (e *echoPeer) addr() *net.UDPAddr { return e.conn.LocalAddr().(*net.UDPAddr) }

// roundTrip sends msg through relay to peer and reads the echo.
func roundTrip(t testing.TB, relay net.PacketConn, peer net.Addr, msg []byte) {
	t.Helper()
	if _, err := relay.WriteTo(msg, peer); err != nil {
		t.Fatalf("WriteTo %v: %v", peer, err)
	}
	buf := make([]byte, 2048)
	if err := relay.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	n, from, err := relay.ReadFrom(buf)
	if err != nil {
		t.Fatalf("ReadFrom: %v", err)
	}
	if from.String() != peer.String() || string(buf[:n]) != string(msg) {
		t.Fatalf("got %q from %v, want %q from %v", buf[:n], from, msg, peer)
	}
}

// eventually polls cond until it holds or 5 seconds pass. For server state
// that has no event to wait on (an allocation deleted after a Refresh that
// the client does not wait for).
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawClient speaks TURN over UDP message by message, for requests pion's
// client cannot make (a peer address in IPv4-mapped IPv6 form, a channel
// bind to a refused peer).
type rawClient struct {
	t         testing.TB
	conn      net.PacketConn
	server    net.Addr
	username  stun.Username
	password  string
	realm     stun.Realm
	nonce     stun.Nonce
	integrity stun.MessageIntegrity
}

func (ts *testServer) rawClient(t testing.TB, id string) *rawClient {
	conn, _ := ts.dial(t, "udp")
	server, err := net.ResolveUDPAddr("udp", ts.udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	u, p := Credentials(testSecret, id, time.Hour, time.Now())
	return &rawClient{t: t, conn: conn, server: server, username: stun.NewUsername(u), password: p}
}

// roundTrip sends a request and returns the response with its transaction ID.
func (c *rawClient) roundTrip(setters ...stun.Setter) *stun.Message {
	c.t.Helper()
	req, err := stun.Build(setters...)
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.WriteTo(req.Raw, c.server); err != nil {
		c.t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		n, _, err := c.conn.ReadFrom(buf)
		if err != nil {
			c.t.Fatalf("no response to %v: %v", req.Type, err)
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if res.Decode() == nil && res.TransactionID == req.TransactionID {
			return res
		}
	}
}

// allocate allocates a relay with extra attributes (REQUESTED-ADDRESS-FAMILY,
// EVEN-PORT, ...) and returns the success response.
func (c *rawClient) allocate(extra ...stun.Setter) *stun.Message {
	c.t.Helper()
	res := c.roundTrip(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), requestedUDP{}, stun.Fingerprint)
	if err := c.nonce.GetFrom(res); err != nil {
		c.t.Fatalf("no nonce in %v", res)
	}
	if err := c.realm.GetFrom(res); err != nil {
		c.t.Fatalf("no realm in %v", res)
	}
	c.integrity = stun.NewLongTermIntegrity(c.username.String(), c.realm.String(), c.password)
	res = c.request(stun.MethodAllocate, append([]stun.Setter{requestedUDP{}}, extra...)...)
	if res.Type.Class != stun.ClassSuccessResponse {
		c.t.Fatalf("allocate: %v (code %d)", res, errorCode(res))
	}
	return res
}

// request sends an authenticated request.
func (c *rawClient) request(method stun.Method, attrs ...stun.Setter) *stun.Message {
	c.t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, attrs...)
	setters = append(setters, c.username, c.realm, c.nonce, c.integrity, stun.Fingerprint)
	return c.roundTrip(setters...)
}

// errorCode returns the error code of a response, or 0 for success.
func errorCode(res *stun.Message) stun.ErrorCode {
	if res.Type.Class == stun.ClassSuccessResponse {
		return 0
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(res); err != nil {
		return -1
	}
	return ec.Code
}

// requestedUDP is REQUESTED-TRANSPORT UDP.
type requestedUDP struct{}

func (requestedUDP) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})
	return nil
}

// rawPeerAddr is an XOR-PEER-ADDRESS written as given: a 16-byte IP goes out
// with the IPv6 family even when it is IPv4-mapped, which the stun package
// would rewrite as IPv4.
type rawPeerAddr struct {
	ip   netip.Addr
	port uint16
}

func (a rawPeerAddr) AddTo(m *stun.Message) error {
	family, ip := byte(1), a.ip.AsSlice()
	if a.ip.Is6() {
		family = 2
	}
	v := make([]byte, 4+len(ip))
	v[1] = family
	v[2] = byte(a.port>>8) ^ 0x21
	v[3] = byte(a.port) ^ 0x12
	var xor [16]byte
	xor[0], xor[1], xor[2], xor[3] = 0x21, 0x12, 0xA4, 0x42 // magic cookie
	copy(xor[4:], m.TransactionID[:])
	for i := range ip {
		v[4+i] = ip[i] ^ xor[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)
	return nil
}

func (a rawPeerAddr) String() string { return fmt.Sprintf("%v:%d", a.ip, a.port) }

// channelNumber is a CHANNEL-NUMBER attribute.
type channelNumber uint16

func (n channelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(n >> 8), byte(n), 0, 0})
	return nil
}

// rawAttr is any attribute, given as type and value.
type rawAttr struct {
	typ stun.AttrType
	v   []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.typ, a.v)
	return nil
}
