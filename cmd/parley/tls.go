package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parley-chat/parley/certs"
	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/turn"
)

// certPollInterval is how often --tls-cert and --tls-key are checked for a
// change (SIGHUP reloads them at once).
const certPollInterval = 3 * time.Second

// tlsSetup is what serving HTTPS takes beyond the HTTP server: the certificate
// (from files, self-signed or ACME), the HTTPS port shared with TURN over
// TLS, and the plain-HTTP listener that redirects to HTTPS and answers ACME
// HTTP-01 challenges.
type tlsSetup struct {
	// Static after setupHTTPS.
	log       *slog.Logger
	conf      *tls.Config // the HTTPS port: certificate and ALPN
	turnConf  *tls.Config // the separate TURN-over-TLS port: same certificate, no ALPN
	turnsHost string      // host of turns: URLs; "" means the public IP
	openHost  string      // host to tell a browser to open; "" means the listen address
	port      *sharedPort
	files     *certs.Files // with --tls-cert
	acme      *certs.ACME  // with --acme-domain
	redirect  *http.Server // nil without a redirect listener
	redirectL net.Listener

	stop context.CancelFunc // set by start; ends the goroutines below
	wg   sync.WaitGroup     // the redirect server, the file watcher, the first ACME order
}

// setupHTTPS prepares HTTPS on ln (bound to --listen): it loads or makes the
// certificate, opens the redirect listener and starts sorting ln's
// connections between HTTP and TURN (when TURN is on). The certificate's
// fingerprint is printed to stdout when it is self-signed. On error nothing
// it opened stays open; ln is the caller's to close.
func setupHTTPS(cfg config.Config, ln net.Listener, publicIP netip.Addr, stdout io.Writer, log *slog.Logger) (*tlsSetup, error) {
	h := &tlsSetup{log: log}
	var getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	switch {
	case cfg.TLS.Cert != "":
		files, err := certs.LoadFiles(cfg.TLS.Cert, cfg.TLS.Key, log)
		if err != nil {
			return nil, err
		}
		h.files, getCert = files, files.GetCertificate
		h.turnsHost = turn.CertificateHost(*files.Certificate())
		h.openHost = h.turnsHost
		leaf := files.Certificate().Leaf
		log.Info("tls: certificate from files", "cert", cfg.TLS.Cert, "names", leaf.DNSNames, "ips", leaf.IPAddresses,
			"not_after", leaf.NotAfter, "serial", leaf.SerialNumber.Text(16))

	case cfg.TLS.SelfSigned:
		cert, created, err := certs.SelfSigned(cfg.DataDir, selfSignedHosts(publicIP), log)
		if err != nil {
			return nil, err
		}
		getCert = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cert, nil }
		// turns: URLs keep the public IP as their host: it is one of the
		// certificate's names, and the one clients elsewhere can reach.
		fp := certs.Fingerprint(cert.Certificate[0])
		state := "kept"
		if created {
			state = "new"
		}
		log.Info("tls: self-signed certificate", "state", state, "fingerprint_sha256", fp,
			"names", cert.Leaf.DNSNames, "ips", cert.Leaf.IPAddresses, "not_after", cert.Leaf.NotAfter,
			"cert", filepath.Join(cfg.DataDir, certs.SelfSignedCertFile))
		fmt.Fprintf(stdout, "Self-signed TLS certificate (%s, in %s). Browsers will warn; check that they show this SHA-256 fingerprint:\n  %s\n",
			state, cfg.DataDir, fp)

	default:
		a, err := certs.NewACME(certs.ACMEConfig{
			Domains:      cfg.TLS.ACMEDomains,
			Email:        cfg.TLS.ACMEEmail,
			DirectoryURL: cfg.TLS.ACMEDirectory,
			CAFile:       cfg.TLS.ACMECAFile,
			CacheDir:     filepath.Join(cfg.DataDir, "acme"),
		}, log.With("part", "acme"))
		if err != nil {
			return nil, err
		}
		h.acme, getCert = a, a.GetCertificate
		h.turnsHost = a.Domains()[0]
		h.openHost = h.turnsHost
		log.Info("tls: certificates over ACME", "domains", a.Domains(), "directory", cfg.TLS.ACMEDirectory,
			"cache", filepath.Join(cfg.DataDir, "acme"))
	}

	h.conf = &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: getCert,
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if cfg.TURN.Enabled {
		h.conf.NextProtos = append(h.conf.NextProtos, alpnTURN)
	}
	if h.acme != nil {
		h.conf.NextProtos = append(h.conf.NextProtos, certs.ALPNProto)
	}
	h.turnConf = h.conf.Clone()
	h.turnConf.NextProtos = nil // a TURN client's ALPN, if any, is not checked

	httpsPort := ln.Addr().(*net.TCPAddr).Port
	if addr := cfg.TLS.RedirectListen; addr != "" {
		rl, err := net.Listen("tcp", addr)
		switch {
		case err == nil:
			h.redirectL = rl
			var handler http.Handler = redirectHandler(httpsPort, cmp.Or(h.openHost, publicIP.String()))
			if h.acme != nil {
				handler = h.acme.HTTPHandler(handler)
			}
			h.redirect = &http.Server{
				Handler:           handler,
				ReadHeaderTimeout: 10 * time.Second,
				IdleTimeout:       30 * time.Second,
				ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
			}
		case redirectRequired(addr, h.acme != nil, httpsPort) != "":
			return nil, fmt.Errorf("listen on %s (%s): %w", addr, redirectRequired(addr, h.acme != nil, httpsPort), err)
		default:
			msg := "cannot listen for plain HTTP; http:// links will not redirect to https:// (set --http-redirect-listen to another address, or to empty to silence this)"
			if h.acme != nil {
				msg += "; ACME will validate over TLS-ALPN-01 only"
			}
			log.Warn(msg, "addr", addr, "err", err)
		}
	}

	h.port = newSharedPort(ln, h.conf, cfg.TURN.Enabled, log.With("part", "https"))
	return h, nil
}

// redirectRequired says why the redirect listener at addr must be bound for
// Parley to start, or "" when a failure to bind it is only worth a warning.
// An address the user chose must be bound, like every other. The default,
// port 80, needs privileges that a LAN or test install often lacks, and
// HTTPS works without it; except with ACME when HTTPS is not on port 443:
// the CA validates TLS-ALPN-01 on port 443 only, so HTTP-01 on port 80 is
// then the only way to a certificate.
func redirectRequired(addr string, acme bool, httpsPort int) string {
	switch {
	case acme && httpsPort != 443:
		return "plain HTTP for ACME HTTP-01, needed because HTTPS is not on port 443"
	case addr != config.Default().TLS.RedirectListen:
		return "plain HTTP redirect to HTTPS, --http-redirect-listen"
	}
	return ""
}

// start serves the redirect listener, watches the certificate files (and
// SIGHUP) and asks for the ACME certificates, until shutdown.
func (h *tlsSetup) start(ctx context.Context) {
	ctx, h.stop = context.WithCancel(ctx)
	if h.redirect != nil {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			h.log.Info("redirecting plain HTTP to HTTPS", "addr", h.redirectL.Addr().String(), "acme_http01", h.acme != nil)
			if err := h.redirect.Serve(h.redirectL); err != http.ErrServerClosed {
				h.log.Error("http redirect stopped", "addr", h.redirectL.Addr().String(), "err", err)
			}
		}()
	}
	if h.files != nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer signal.Stop(hup)
			h.files.Watch(ctx, certPollInterval, hup)
		}()
	}
	if h.acme != nil {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			if err := h.acme.Obtain(); err != nil {
				h.log.Error("acme: no certificate yet; check that the name points here and that port 443 (or 80) is reachable; retrying at the next visit", "err", err)
			}
		}()
	}
}

// shutdown stops the redirect server and the goroutines of start, waiting
// for them until ctx ends. The HTTPS port is closed by the HTTP server's
// Shutdown (or by Close).
func (h *tlsSetup) shutdown(ctx context.Context) {
	if h.redirect != nil {
		if err := h.redirect.Shutdown(ctx); err != nil {
			h.log.Warn("http redirect shutdown", "err", err)
		}
	}
	if h.stop != nil {
		h.stop()
	}
	done := make(chan struct{})
	go func() {
		h.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		h.log.Warn("tls: gave up waiting for the ACME order at shutdown")
	}
	h.port.Close()
}

// Close closes the HTTPS port and the redirect listener and ends the
// goroutines of start without waiting for them: for a start-up that fails,
// or a server that stopped on its own.
func (h *tlsSetup) Close() error {
	if h.stop != nil {
		h.stop()
	}
	h.port.Close()
	if h.redirect != nil {
		h.redirect.Close()
	}
	if h.redirectL != nil {
		h.redirectL.Close()
	}
	return nil
}

// httpListener is the listener http.Server serves HTTPS on.
func (h *tlsSetup) httpListener() net.Listener { return h.port.httpListener() }

// turnListener is the TURN side of the HTTPS port, for
// turn.Listeners.SharedTLS; nil when TURN is off.
func (h *tlsSetup) turnListener() net.Listener { return h.port.turnListener() }

// browseAddr is the host:port a browser should open: the certificate's name
// when there is one.
func (h *tlsSetup) browseAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok || h.openHost == "" {
		return browseAddr(a)
	}
	if tcp.Port == 443 {
		return h.openHost
	}
	return net.JoinHostPort(h.openHost, strconv.Itoa(tcp.Port))
}

// selfSignedHosts are the names a LAN user may type: localhost, this
// machine's name (and its mDNS .local name), the loopback addresses and the
// advertised address.
func selfSignedHosts(publicIP netip.Addr) []string {
	hosts := []string{"localhost"}
	if name, err := os.Hostname(); err == nil && name != "" && name != "localhost" {
		hosts = append(hosts, name)
		if !strings.Contains(name, ".") {
			hosts = append(hosts, name+".local")
		}
	}
	hosts = append(hosts, "127.0.0.1", "::1")
	if publicIP.IsValid() && !publicIP.IsLoopback() {
		hosts = append(hosts, publicIP.Unmap().String())
	}
	return hosts
}

// redirectHandler sends every request to the same host and path over HTTPS,
// on httpsPort. A request without a Host header goes to fallbackHost.
func redirectHandler(httpsPort int, fallbackHost string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hh, _, err := net.SplitHostPort(host); err == nil {
			host = hh
		}
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if host == "" {
			host = fallbackHost
		}
		switch {
		case httpsPort != 443:
			host = net.JoinHostPort(host, strconv.Itoa(httpsPort))
		case strings.Contains(host, ":"): // IPv6
			host = "[" + host + "]"
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
}
