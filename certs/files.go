// Package certs supplies the certificate that Parley serves HTTPS and TURN
// over TLS with, in one of three ways: PEM files that are read again when
// they change or on SIGHUP (Files), a self-signed certificate generated once
// and kept in the data folder (SelfSigned), or certificates obtained and
// renewed over ACME, e.g. from Let's Encrypt (ACME).
//
// Each way ends in a GetCertificate for tls.Config, so a new certificate is
// used from the next handshake on while open connections keep theirs.
package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Files serves the certificate chain and key of two PEM files and reads them
// again on Reload, or when Watch sees them change. A pair that cannot be
// loaded (missing, malformed, key not matching) never replaces the one in use.
type Files struct {
	// Static after construction.
	certFile, keyFile string
	log               *slog.Logger

	cert atomic.Pointer[tls.Certificate] // served; replaced whole by a good load

	mu   sync.Mutex // serializes loads
	seen stamp      // guarded by mu: the files as they were at the last load
}

// stamp identifies the versions of the two files, to notice a change without
// reading them.
type stamp struct{ cert, key fileStamp }

type fileStamp struct {
	mod  int64 // modification time, in nanoseconds since 1970
	size int64
	ok   bool // the file could be stat'ed
}

// LoadFiles reads certFile and keyFile (PEM; the certificate file may hold a
// chain, leaf first) and returns a Files serving them.
func LoadFiles(certFile, keyFile string, log *slog.Logger) (*Files, error) {
	f := &Files{certFile: certFile, keyFile: keyFile, log: log}
	f.seen = f.stat()
	cert, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cert.Store(cert)
	warnValidity(log, cert.Leaf, time.Now())
	return f, nil
}

// GetCertificate is tls.Config.GetCertificate: the certificate loaded last.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return f.cert.Load(), nil
}

// Certificate returns the certificate served now; its Leaf is set.
func (f *Files) Certificate() *tls.Certificate { return f.cert.Load() }

// Reload reads the files again. On success the new certificate is served from
// the next handshake on; on failure the one in use stays and the error says
// why.
func (f *Files) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = f.stat()
	cert, err := f.load()
	if err != nil {
		return err
	}
	f.cert.Store(cert)
	return nil
}

// Watch reloads the files on every value from hup (SIGHUP) and when polling
// every interval shows them changed, until ctx ends. A change is loaded once
// the files have stayed the same for one more interval, so that a certificate
// written a moment before its key is not taken for a bad pair. Each reload is
// logged; a failed one as an error, naming the files and keeping the old
// certificate.
func (f *Files) Watch(ctx context.Context, every time.Duration, hup <-chan os.Signal) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	var pending stamp // a change seen at the last tick, not loaded yet
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			f.reloadAndLog("SIGHUP")
		case <-tick.C:
			now := f.stat()
			f.mu.Lock()
			changed := now != f.seen
			f.mu.Unlock()
			switch {
			case !changed:
				pending = stamp{}
			case now == pending:
				f.reloadAndLog("files changed")
				pending = stamp{}
			default:
				pending = now
			}
		}
	}
}

func (f *Files) reloadAndLog(why string) {
	if err := f.Reload(); err != nil {
		f.log.Error("tls: cannot reload the certificate; still serving the previous one",
			"cert", f.certFile, "key", f.keyFile, "reason", why, "err", err)
		return
	}
	leaf := f.cert.Load().Leaf
	f.log.Info("tls: certificate reloaded", "cert", f.certFile, "reason", why,
		"names", leaf.DNSNames, "serial", leaf.SerialNumber.Text(16), "not_after", leaf.NotAfter)
	warnValidity(f.log, leaf, time.Now())
}

// load reads the pair and checks that it can be served.
func (f *Files) load() (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", f.certFile, f.keyFile, err)
	}
	if cert.Leaf == nil { // LoadX509KeyPair sets it unless GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("load TLS certificate %s: %w", f.certFile, err)
		}
	}
	return &cert, nil
}

func (f *Files) stat() stamp {
	return stamp{cert: statFile(f.certFile), key: statFile(f.keyFile)}
}

// statFile follows symbolic links, so a link switched to a new file (certbot's
// live/ folder, a Kubernetes secret) counts as a change.
func statFile(name string) fileStamp {
	fi, err := os.Stat(name)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime().UnixNano(), size: fi.Size(), ok: true}
}

// warnValidity logs a warning for a certificate that is not valid at now:
// browsers will refuse it, but serving it is still better than serving none.
func warnValidity(log *slog.Logger, leaf *x509.Certificate, now time.Time) {
	switch {
	case now.After(leaf.NotAfter):
		log.Warn("tls: the certificate has expired", "not_after", leaf.NotAfter, "names", leaf.DNSNames)
	case now.Before(leaf.NotBefore):
		log.Warn("tls: the certificate is not valid yet", "not_before", leaf.NotBefore, "names", leaf.DNSNames)
	}
}
