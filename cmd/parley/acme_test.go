package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// acmeTestDomain is the name the test gets a certificate for; the test's DNS
// stub resolves every name to 127.0.0.1.
const acmeTestDomain = "parley.test"

// TestACME: with --acme-domain, Parley gets a certificate from an ACME CA
// (Let's Encrypt's test server pebble, run in-process, validating for real
// against Parley's own listeners) and serves it on the HTTPS port, over
// each challenge type: the CA can reach only the port of the one under test.
func TestACME(t *testing.T) {
	// pebble reads these when it is built: no random sleeps before
	// validation, no nonces rejected for practice, no authorization reused
	// from an earlier order.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	t.Setenv("PEBBLE_AUTHZREUSE", "0")
	dnsAddr := startDNSStub(t)

	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			acme := newLazyACMEServer(t)
			cfg := testConfig(t)
			cfg.TLS.ACMEDomains = []string{acmeTestDomain}
			cfg.TLS.ACMEDirectory = acme.URL + wfe.DirectoryPath
			cfg.TLS.ACMECAFile = acme.caFile
			cfg.TLS.ACMEEmail = "admin@" + acmeTestDomain
			cfg.TLS.RedirectListen = "127.0.0.1:0"
			cfg.DataDir = t.TempDir()
			r := startTLSRun(t, cfg)
			if want := "https://" + acmeTestDomain + ":" + r.port; r.base != want {
				t.Errorf("run says to open %s, want %s", r.base, want)
			}
			httpsPort, _ := strconv.Atoi(r.port)
			_, redirectPort, _ := net.SplitHostPort(r.logs.find(t, `redirecting plain HTTP to HTTPS.* addr=(\S+)`))
			httpPort, _ := strconv.Atoi(redirectPort)

			// The CA validates TLS-ALPN-01 on the HTTPS port and HTTP-01 on
			// the redirect port; the other gets a port where nobody listens.
			closed := closedPort(t)
			switch challenge {
			case "tls-alpn-01":
				httpPort = closed
			case "http-01":
				httpsPort = closed
			}
			roots := acme.start(t, httpPort, httpsPort, dnsAddr)

			// The first handshake waits for the certificate if Parley's own
			// request at start has not got it yet.
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Minute}, "tcp", r.addr,
				&tls.Config{ServerName: acmeTestDomain, RootCAs: roots, NextProtos: []string{"h2", "http/1.1"}})
			if err != nil {
				t.Fatalf("TLS to %s as %s: %v", r.addr, acmeTestDomain, err)
			}
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if !strings.Contains(leaf.Issuer.CommonName, "Pebble") || leaf.VerifyHostname(acmeTestDomain) != nil {
				t.Errorf("served certificate for %v issued by %q, want one for %s from pebble", leaf.DNSNames, leaf.Issuer, acmeTestDomain)
			}

			c := httpsClient(roots, []string{"h2", "http/1.1"})
			c.Transport.(*http.Transport).TLSClientConfig.ServerName = acmeTestDomain
			resp, err := c.Get("https://" + r.addr + "/healthz")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("GET /healthz = %d", resp.StatusCode)
			}
			r.logs.find(t, `acme: certificate ready`)
			if _, err := os.Stat(filepath.Join(cfg.DataDir, "acme", acmeTestDomain)); err != nil {
				t.Errorf("certificate not in the cache: %v", err)
			}
		})
	}
}

// lazyACMEServer is an HTTPS server for pebble's ACME API. It is listening
// from the start, so that Parley can be configured with its URL, but pebble
// is built only once Parley's ports are known; requests wait until then.
type lazyACMEServer struct {
	*httptest.Server
	caFile  string         // the server's own certificate, for --acme-ca-file
	handler http.Handler   // pebble; written before ready is closed
	ready   chan struct{}  // closed by start
	roots   *x509.CertPool // pebble's root, which its certificates chain to
}

func newLazyACMEServer(t *testing.T) *lazyACMEServer {
	s := &lazyACMEServer{ready: make(chan struct{})}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
			s.handler.ServeHTTP(w, r)
		case <-time.After(30 * time.Second):
			http.Error(w, "the test never started pebble", http.StatusServiceUnavailable)
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(s.Close)
	s.caFile = filepath.Join(t.TempDir(), "acme-ca.pem")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
	if err := os.WriteFile(s.caFile, pemCert, 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// start builds pebble, validating HTTP-01 on httpPort and TLS-ALPN-01 on
// tlsPort of whatever dnsAddr resolves names to, and returns its roots.
func (s *lazyACMEServer) start(t *testing.T, httpPort, tlsPort int, dnsAddr string) *x509.CertPool {
	logger := log.New(newLogLines(t), "pebble ", 0)
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, dnsAddr, store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	s.handler = front.Handler()
	s.roots = x509.NewCertPool()
	s.roots.AddCert(authority.GetRootCert(0).Cert)
	close(s.ready)
	return s.roots
}

// startDNSStub serves DNS over TCP (as pebble asks) on 127.0.0.1, answering
// every A question with 127.0.0.1 and nothing else.
func startDNSStub(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		for _, q := range req.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

// closedPort returns a TCP port on 127.0.0.1 where nothing listens.
func closedPort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}
