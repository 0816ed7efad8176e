package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	pionturn "github.com/pion/turn/v5"

	"github.com/parley-chat/parley/certs"
	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/turn"
)

// TestHTTPSWithFiles: --tls-cert/--tls-key serve the page and /healthz to a
// real TLS client over HTTP/2 and HTTP/1.1, plain HTTP to the HTTPS port gets
// a clear 400, the redirect listener sends http:// to https://, and a client
// that never finishes its handshake holds up nobody.
func TestHTTPSWithFiles(t *testing.T) {
	ca := newTestCA(t)
	cfg := testConfig(t)
	cfg.TLS.Cert, cfg.TLS.Key = ca.issueFiles(t, t.TempDir(), 1, "localhost")
	cfg.TLS.RedirectListen = "127.0.0.1:0"
	r := startTLSRun(t, cfg)
	if r.base != "https://localhost:"+r.port {
		t.Errorf("run says to open %s, want https://localhost:%s (the certificate's name)", r.base, r.port)
	}

	// Opened before the requests below, and never handshaking.
	stalled, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()

	for _, tt := range []struct {
		name      string
		alpn      []string
		wantProto string
	}{
		{"HTTP/2", []string{"h2", "http/1.1"}, "HTTP/2.0"},
		{"HTTP/1.1", []string{"http/1.1"}, "HTTP/1.1"},
		{"no ALPN", nil, "HTTP/1.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := httpsClient(ca.pool, tt.alpn)
			for path, want := range map[string]int{"/": 200, "/healthz": 200, "/nope": 404} {
				resp, err := c.Get("https://" + r.addr + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != want || resp.Proto != tt.wantProto {
					t.Errorf("GET %s = %d %s, want %d %s", path, resp.StatusCode, resp.Proto, want, tt.wantProto)
				}
				if serial := resp.TLS.PeerCertificates[0].SerialNumber.Int64(); serial != 1 {
					t.Errorf("served certificate serial %d, want 1", serial)
				}
			}
			// Links the server makes say https.
			room := createRoom(t, c, "https://"+r.addr)
			if !strings.HasPrefix(room.URL, "https://") {
				t.Errorf("room URL %q is not https", room.URL)
			}
		})
	}

	t.Run("plain HTTP to the HTTPS port", func(t *testing.T) {
		resp, err := http.Get("http://" + r.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 400 || !strings.Contains(string(body), "HTTPS") {
			t.Errorf("got %d %q, want 400 saying to use HTTPS", resp.StatusCode, body)
		}
	})

	t.Run("redirect", func(t *testing.T) {
		redirect := r.logs.find(t, `redirecting plain HTTP to HTTPS.* addr=(\S+)`)
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for host, want := range map[string]string{
			"localhost":         "https://localhost:" + r.port + "/r/abc?x=1",
			"chat.example.org":  "https://chat.example.org:" + r.port + "/r/abc?x=1",
			"192.0.2.1:80":      "https://192.0.2.1:" + r.port + "/r/abc?x=1",
			"[2001:db8::1]:80":  "https://[2001:db8::1]:" + r.port + "/r/abc?x=1",
			"chat.example.org.": "https://chat.example.org.:" + r.port + "/r/abc?x=1",
		} {
			req, _ := http.NewRequest("GET", "http://"+redirect+"/r/abc?x=1", nil)
			req.Host = host
			resp, err := noFollow.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
				t.Errorf("Host %s: %d to %q, want 301 to %q", host, resp.StatusCode, resp.Header.Get("Location"), want)
			}
		}
	})

	t.Run("redirect address in use fails the start", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		c := cfg
		c.TLS.RedirectListen = busy.Addr().String()
		err = run(context.Background(), c, quietLogger(t), io.Discard)
		if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
			t.Errorf("run = %v, want an error naming %s", err, busy.Addr())
		}
	})
}

func TestRedirectRequired(t *testing.T) {
	def := config.Default().TLS.RedirectListen
	for _, tt := range []struct {
		addr      string
		acme      bool
		httpsPort int
		required  bool
	}{
		{def, false, 443, false},  // files or self-signed: HTTPS works without port 80
		{def, false, 8443, false}, // same
		{def, true, 443, false},   // ACME: TLS-ALPN-01 on 443 suffices
		{def, true, 8443, true},   // ACME: only HTTP-01 can reach us
		{":8080", false, 443, true},
		{"127.0.0.1:80", true, 443, true}, // chosen by the user
	} {
		if got := redirectRequired(tt.addr, tt.acme, tt.httpsPort) != ""; got != tt.required {
			t.Errorf("redirectRequired(%q, acme=%v, %d) = %v, want %v", tt.addr, tt.acme, tt.httpsPort, got, tt.required)
		}
	}
}

func TestIsSTUN(t *testing.T) {
	for _, tt := range []struct {
		name  string
		first []byte
		want  bool
	}{
		{"binding request", []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42, 1, 2, 3, 4}, true},
		{"allocate request, header only", []byte{0x00, 0x03, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42}, true},
		{"no magic cookie (RFC 3489)", []byte{0x00, 0x01, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04}, false},
		{"channel data", []byte{0x40, 0x00, 0x00, 0x04, 0x21, 0x12, 0xA4, 0x42}, false},
		{"HTTP/1.1", []byte("GET / HTTP/1.1\r\n"), false},
		{"HTTP/2 preface", []byte("PRI * HTTP/2.0\r\n"), false},
		{"too short", []byte{0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4}, false},
	} {
		if got := isSTUN(tt.first); got != tt.want {
			t.Errorf("%s: isSTUN = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestSelfSignedCertificate: --tls-self-signed makes a certificate once,
// prints its fingerprint, serves it, and serves the same one after a restart.
func TestSelfSignedCertificate(t *testing.T) {
	cfg := testConfig(t)
	cfg.TLS.SelfSigned = true
	cfg.TLS.RedirectListen = ""
	cfg.DataDir = filepath.Join(t.TempDir(), "data")
	cfg.PublicIP = "203.0.113.7"
	fpRe := regexp.MustCompile(`fingerprint:\s*$`)

	var first string
	for i, wantState := range []string{"new", "kept"} {
		r := startTLSRun(t, cfg)
		var printed string
		for j, line := range r.stdout {
			if fpRe.MatchString(line) && j+1 < len(r.stdout) {
				printed = strings.TrimSpace(r.stdout[j+1])
				if !strings.Contains(line, "("+wantState+",") {
					t.Errorf("start %d: %q, want the certificate to be %s", i+1, line, wantState)
				}
			}
		}
		if printed == "" {
			t.Fatalf("start %d: no fingerprint on stdout: %q", i+1, r.stdout)
		}

		conn, err := tls.Dial("tcp", r.addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		if got := certs.Fingerprint(leaf.Raw); got != printed {
			t.Errorf("start %d: served fingerprint %s, printed %s", i+1, got, printed)
		}
		if !r.logs.has(printed) {
			t.Errorf("start %d: fingerprint not in the log", i+1)
		}
		if i == 0 {
			first = printed
			hostname, _ := os.Hostname()
			for _, h := range []string{"localhost", "127.0.0.1", "::1", "203.0.113.7", hostname} {
				if err := leaf.VerifyHostname(h); err != nil {
					t.Errorf("certificate does not name %s: %v", h, err)
				}
			}
			// A user who trusts the kept file verifies the server by it.
			pool := x509.NewCertPool()
			b, _ := os.ReadFile(filepath.Join(cfg.DataDir, "cert.pem"))
			pool.AppendCertsFromPEM(b)
			c := httpsClient(pool, []string{"h2", "http/1.1"})
			resp, err := c.Get("https://" + r.addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if fi, err := os.Stat(filepath.Join(cfg.DataDir, "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("key.pem: %v %v, want mode 0600", fi, err)
			}
		} else if printed != first {
			t.Errorf("after a restart the fingerprint is %s, was %s", printed, first)
		}
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCertificateReloadKeepsWebSocket: replacing the certificate files and
// sending SIGHUP serves the new certificate to new connections while a
// WebSocket opened before goes on working; a bad replacement keeps the
// certificate in use.
func TestCertificateReloadKeepsWebSocket(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cfg := testConfig(t)
	cfg.TLS.Cert, cfg.TLS.Key = ca.issueFiles(t, dir, 1, "localhost")
	cfg.TLS.RedirectListen = ""
	r := startTLSRun(t, cfg)
	client := httpsClient(ca.pool, []string{"h2", "http/1.1"})
	room := createRoom(t, client, "https://"+r.addr)

	ws := dialWSS(t, r.addr, ca.pool)
	joinRoom(t, ws, room.ID, "Ada")
	if got := servedSerial(t, r.addr, ca.pool); got != 1 {
		t.Fatalf("serial %d, want 1", got)
	}

	ca.issueFiles(t, dir, 2, "localhost")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the new certificate", func() bool { return servedSerial(t, r.addr, ca.pool) == 2 })

	// The WebSocket from before the reload still carries messages both ways.
	wsRoundTrip(t, ws)
	other := dialWSS(t, r.addr, ca.pool)
	joinRoom(t, other, room.ID, "Grace")
	var peerJoined map[string]any
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&peerJoined); err != nil || peerJoined["type"] != "peer-joined" {
		t.Fatalf("old WebSocket: %v %v, want peer-joined", peerJoined, err)
	}

	// A key that does not match: the log says so, serial 2 stays.
	os.WriteFile(cfg.TLS.Key, []byte("-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n"), 0o600)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	r.logs.find(t, `cannot reload the certificate`)
	if got := servedSerial(t, r.addr, ca.pool); got != 2 {
		t.Errorf("after a bad key: serial %d, want 2", got)
	}
	wsRoundTrip(t, ws)
}

// TestTURNOnHTTPSPort: with TLS on, the HTTPS port also carries TURN over
// TLS: pion's TURN client allocates and relays through it, with the
// credentials and the turns: URL that the room's ICE server list gives,
// while HTTPS requests on the same port keep working, including over
// connections that offer no ALPN (sorted by their first bytes).
func TestTURNOnHTTPSPort(t *testing.T) {
	ca := newTestCA(t)
	cfg := testConfig(t)
	cfg.TLS.Cert, cfg.TLS.Key = ca.issueFiles(t, t.TempDir(), 1, "localhost")
	cfg.TLS.RedirectListen = ""
	cfg.PublicIP = "127.0.0.1"
	cfg.TURN.Enabled = true
	cfg.TURN.Listen, cfg.TURN.TLSListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.TURN.Secret = "shared-port-secret"
	cfg.TURN.AllowPeers = []string{"127.0.0.0/8"} // the echo peer below
	r := startTLSRun(t, cfg)

	// A TLS client that sends nothing after its handshake waits for its
	// first bytes in a goroutine of its own.
	idle, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: ca.pool, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	client := httpsClient(ca.pool, []string{"h2", "http/1.1"})
	room := createRoom(t, client, "https://"+r.addr)
	ws := dialWSS(t, r.addr, ca.pool)
	joined := joinRoom(t, ws, room.ID, "Ada")

	want := "turns:localhost:" + r.port + "?transport=tcp"
	var username, credential string
	var urls []string
	for _, s := range joined.ICEServers {
		urls = append(urls, s.URLs...)
		if slices.Contains(s.URLs, want) {
			username, credential = s.Username, s.Credential
		}
	}
	if username == "" {
		t.Fatalf("ICE servers %v have no %s", urls, want)
	}
	if !slices.ContainsFunc(urls, func(u string) bool { return strings.HasPrefix(u, "turns:localhost:") && u != want }) {
		t.Errorf("ICE servers %v lost the separate --turn-tls-listen port", urls)
	}

	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := peer.ReadFrom(buf)
			if err != nil {
				return
			}
			peer.WriteTo(buf[:n], from)
		}
	}()

	for _, alpn := range [][]string{nil, {"stun.turn"}} {
		t.Run(fmt.Sprintf("ALPN %v", alpn), func(t *testing.T) {
			conn, err := tls.Dial("tcp", r.addr, &tls.Config{RootCAs: ca.pool, ServerName: "localhost", NextProtos: alpn})
			if err != nil {
				t.Fatal(err)
			}
			c, err := pionturn.NewClient(&pionturn.ClientConfig{
				STUNServerAddr: r.addr,
				TURNServerAddr: r.addr,
				Conn:           pionturn.NewSTUNConn(conn),
				Username:       username,
				Password:       credential,
				LoggerFactory:  turn.NewLoggerFactory(quietLogger(t)),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Listen(); err != nil {
				t.Fatal(err)
			}
			relay, err := c.Allocate()
			if err != nil {
				t.Fatalf("Allocate through the HTTPS port: %v", err)
			}
			defer relay.Close()

			// HTTPS on the same port, over every kind of client, while the
			// allocation is live.
			for _, protos := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}, nil} {
				resp, err := httpsClient(ca.pool, protos).Get("https://" + r.addr + "/healthz")
				if err != nil {
					t.Fatalf("HTTPS with ALPN %v: %v", protos, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("HTTPS with ALPN %v: %d", protos, resp.StatusCode)
				}
			}
			if room := createRoom(t, httpsClient(ca.pool, nil), "https://"+r.addr); !strings.HasPrefix(room.URL, "https://") {
				t.Errorf("over a sorted connection the room URL is %q, not https", room.URL)
			}

			msg := []byte("relayed through :" + r.port)
			if _, err := relay.WriteTo(msg, peer.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			relay.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 1500)
			n, _, err := relay.ReadFrom(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("relay echo: %q %v", buf[:n], err)
			}
		})
	}
	wsRoundTrip(t, ws)
}

// ---- helpers ----

// tlsRun is the program running in-process with TLS on.
type tlsRun struct {
	base   string   // what run tells to open, without the trailing slash
	addr   string   // 127.0.0.1:port of the HTTPS listener
	port   string   // its port
	stdout []string // lines before the "Open" line
	logs   *logLines
	stop   func() error // cancels run and returns its result
}

// startTLSRun runs the program with cfg until the test ends (or stop).
func startTLSRun(t *testing.T, cfg config.Config) *tlsRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := newLogLines(t)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, logs.logger(), pw)
		pw.Close()
	}()
	r := &tlsRun{logs: logs}
	var once sync.Once
	var runErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				runErr = fmt.Errorf("run did not stop within 10s")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("run: %v", err)
		}
	})
	re := regexp.MustCompile(`Open (https://\S+?)/ in your browser`)
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, pr)
			r.base = m[1]
			r.port = r.base[strings.LastIndex(r.base, ":")+1:]
			r.addr = "127.0.0.1:" + r.port
			return r
		}
		r.stdout = append(r.stdout, sc.Text())
	}
	cancel()
	t.Fatalf("run ended before serving: %v", <-done)
	return nil
}

// logLines is a log for run that shows its lines in the test output (until
// the test ends: goroutines may log a little later) and keeps them for
// assertions.
type logLines struct {
	t    *testing.T
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func newLogLines(t *testing.T) *logLines {
	l := &logLines{t: t}
	t.Cleanup(func() {
		l.mu.Lock()
		l.done = true
		l.mu.Unlock()
	})
	return l
}

func (l *logLines) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.done {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (l *logLines) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// find waits for a log line matching expr and returns its first group (or
// the whole match).
func (l *logLines) find(t *testing.T, expr string) string {
	t.Helper()
	re := regexp.MustCompile(expr)
	var m []string
	waitUntil(t, "log line "+expr, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		m = re.FindStringSubmatch(l.buf.String())
		return m != nil
	})
	return m[len(m)-1]
}

// quietLogger logs to t until the test ends, then drops lines.
func quietLogger(t *testing.T) *slog.Logger { return newLogLines(t).logger() }

// testCA issues certificates that the test's clients trust.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Parley test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issueFiles writes cert.pem and key.pem in dir: a certificate for name and
// 127.0.0.1 with the given serial. It returns their paths.
func (ca *testCA) issueFiles(t *testing.T, dir string, serial int64, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	// Replace whole files, as certbot and friends do.
	for name, data := range map[string][]byte{
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		certFile: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	} {
		if err := os.WriteFile(name+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(name+".tmp", name); err != nil {
			t.Fatal(err)
		}
	}
	return certFile, keyFile
}

// httpsClient trusts roots and offers alpn (nil: no ALPN at all, as some
// clients do). Certificates are checked for 127.0.0.1.
func httpsClient(roots *x509.CertPool, alpn []string) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, NextProtos: alpn},
		ForceAttemptHTTP2: slices.Contains(alpn, "h2"),
		DisableKeepAlives: alpn == nil,
	}
	if alpn == nil {
		// http.Transport adds ALPN on its own; a dialer of our own does not.
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			d := &tls.Dialer{Config: &tls.Config{RootCAs: roots}}
			return d.DialContext(ctx, network, addr)
		}
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

type testRoom struct{ ID, URL, Mode string }

func createRoom(t *testing.T, c *http.Client, base string) testRoom {
	t.Helper()
	resp, err := c.Post(base+"/api/rooms", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var room testRoom
	if err := json.NewDecoder(resp.Body).Decode(&room); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/rooms = %d %v", resp.StatusCode, err)
	}
	return room
}

func dialWSS(t *testing.T, addr string, roots *x509.CertPool) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: roots}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial("wss://"+addr+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

type joinedMessage struct {
	Type       string `json:"type"`
	ICEServers []struct {
		URLs       []string `json:"urls"`
		Username   string   `json:"username"`
		Credential string   `json:"credential"`
	} `json:"iceServers"`
}

func joinRoom(t *testing.T, ws *websocket.Conn, room, name string) joinedMessage {
	t.Helper()
	if err := ws.WriteJSON(map[string]string{"type": "join", "room": room, "name": name}); err != nil {
		t.Fatal(err)
	}
	var joined joinedMessage
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&joined); err != nil || joined.Type != "joined" {
		t.Fatalf("join: %+v %v", joined, err)
	}
	return joined
}

// wsRoundTrip sends a message the server answers with an error, and reads
// the answer: the connection works both ways.
func wsRoundTrip(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	if err := ws.WriteJSON(map[string]string{"type": "no-such-type"}); err != nil {
		t.Fatalf("write on the WebSocket: %v", err)
	}
	var reply map[string]any
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&reply); err != nil || reply["type"] != "error" {
		t.Fatalf("WebSocket reply: %v %v, want an error message", reply, err)
	}
}

// servedSerial opens a new TLS connection and returns the serial of the
// certificate served.
func servedSerial(t *testing.T, addr string, roots *x509.CertPool) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
