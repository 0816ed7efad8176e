package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ALPNProto is the ALPN protocol of ACME's TLS-ALPN-01 challenge: an HTTPS
// listener that serves ACME certificates must offer it.
const ALPNProto = acme.ALPNProto

// ACMEConfig configures certificates obtained over ACME.
type ACMEConfig struct {
	// Domains are the names to get certificates for; the first is the one
	// served to clients that send no server name.
	Domains []string
	// Email is the contact address of the ACME account (optional).
	Email string
	// DirectoryURL is the ACME directory of the CA.
	DirectoryURL string
	// CAFile is a PEM file of the roots that the CA's own HTTPS is verified
	// with (a private CA); empty means the system roots.
	CAFile string
	// CacheDir keeps the account key and the certificates.
	CacheDir string
}

// ACME obtains certificates for the configured domains on first use (or at
// Obtain), keeps them in the cache folder and renews them before they expire,
// with golang.org/x/crypto/acme/autocert. The CA validates with TLS-ALPN-01
// on the HTTPS port (which must offer ALPNProto) and, once HTTPHandler has
// been called, with HTTP-01 on port 80. Using it accepts the CA's terms of
// service.
type ACME struct {
	// Static after construction.
	m       *autocert.Manager
	domains []string
	log     *slog.Logger
}

// errNotOurs is the host policy's answer for a name that is not configured.
var errNotOurs = errors.New("not a configured ACME domain")

// NewACME returns an ACME for c. It creates the cache folder and reads
// c.CAFile now, so that a mistake in either stops the start.
func NewACME(c ACMEConfig, log *slog.Logger) (*ACME, error) {
	if len(c.Domains) == 0 {
		return nil, errors.New("acme: no domains")
	}
	if err := os.MkdirAll(c.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("acme cache: %w", err)
	}
	httpClient := &http.Client{Timeout: time.Minute}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("acme CA file: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme CA file %s: no PEM certificates", c.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		httpClient.Transport = tr
	}
	domains := make([]string, len(c.Domains))
	for i, d := range c.Domains {
		domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	a := &ACME{domains: domains, log: log}
	a.m = &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(c.CacheDir),
		HostPolicy: a.hostPolicy,
		Email:      c.Email,
		Client: &acme.Client{
			DirectoryURL: c.DirectoryURL,
			HTTPClient:   httpClient,
			UserAgent:    "parley",
		},
	}
	return a, nil
}

// Domains returns the configured domains.
func (a *ACME) Domains() []string { return slices.Clone(a.domains) }

// GetCertificate is tls.Config.GetCertificate. It answers TLS-ALPN-01
// challenges, serves the certificate of the name the client asked for (the
// first domain when it asked for none, e.g. a client that dialed the IP
// address), and obtains that certificate first if there is none yet, which
// holds the handshake up for a few seconds.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if hello.ServerName == "" {
		h := *hello
		h.ServerName = a.domains[0]
		hello = &h
	}
	cert, err := a.m.GetCertificate(hello)
	if err != nil {
		if errors.Is(err, errNotOurs) || slices.Equal(hello.SupportedProtos, []string{ALPNProto}) {
			a.log.Debug("acme: no certificate for this handshake", "server_name", hello.ServerName, "err", err)
		} else {
			a.log.Error("acme: cannot get a certificate", "domain", hello.ServerName, "err", err)
		}
	}
	return cert, err
}

// HTTPHandler answers ACME HTTP-01 challenges and hands every other request
// to fallback. Calling it lets the CA validate over HTTP-01 too, which it
// tries after TLS-ALPN-01; it must then be served on port 80.
func (a *ACME) HTTPHandler(fallback http.Handler) http.Handler {
	return a.m.HTTPHandler(fallback)
}

// Obtain makes sure there is a certificate for every domain now, from the
// cache or from the CA, rather than at the first visit, so that a mistake
// (DNS not pointing here, a closed port) is logged at start. It blocks until
// done: seconds with a reachable CA, minutes at most.
func (a *ACME) Obtain() error {
	var errs []error
	for _, d := range a.domains {
		// A client that can use ECDSA gets autocert's ECDSA certificate, the
		// one browsers will be served.
		hello := &tls.ClientHelloInfo{
			ServerName:       d,
			SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			SupportedCurves:  []tls.CurveID{tls.CurveP256},
			CipherSuites:     []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		}
		cert, err := a.GetCertificate(hello)
		if err != nil {
			errs = append(errs, fmt.Errorf("acme %s: %w", d, err))
			continue
		}
		a.log.Info("acme: certificate ready", "domain", d, "issuer", cert.Leaf.Issuer.String(), "not_after", cert.Leaf.NotAfter)
	}
	return errors.Join(errs...)
}

// hostPolicy accepts the configured domains. HTTP-01 requests carry the
// name in their Host header, with a port when port 80 is reached through
// another one; the port is not part of the name.
func (a *ACME) hostPolicy(_ context.Context, host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if slices.Contains(a.domains, host) {
		return nil
	}
	return fmt.Errorf("%w: %q", errNotOurs, host)
}
