package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// logBuffer collects log lines for assertions and shows them in the test
// output; lines after the test ended are kept but not shown.
type logBuffer struct {
	t    testing.TB
	mu   sync.Mutex
	buf  bytes.Buffer
	done bool
}

func newLog(t testing.TB) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{t: t}
	t.Cleanup(func() {
		lb.mu.Lock()
		lb.done = true
		lb.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	if !l.done {
		l.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func (l *logBuffer) contains(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Contains(l.buf.String(), s)
}

// testCA is a certificate authority for test certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
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

// issue writes a certificate for localhost and 127.0.0.1 with the given
// serial, and its key, to certFile and keyFile.
func (ca *testCA) issue(t testing.TB, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
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
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func serialOf(f *Files) int64 { return f.Certificate().Leaf.SerialNumber.Int64() }

func TestFilesReload(t *testing.T) {
	log, logs := newLog(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	ca := newTestCA(t)
	ca.issue(t, 100, certFile, keyFile)

	f, err := LoadFiles(certFile, keyFile, log)
	if err != nil {
		t.Fatal(err)
	}
	if got := serialOf(f); got != 100 {
		t.Fatalf("serial %d, want 100", got)
	}

	ca.issue(t, 101, certFile, keyFile)
	if err := f.Reload(); err != nil {
		t.Fatal(err)
	}
	c, _ := f.GetCertificate(&tls.ClientHelloInfo{})
	if got := c.Leaf.SerialNumber.Int64(); got != 101 {
		t.Fatalf("after Reload: serial %d, want 101", got)
	}

	t.Run("bad files keep the old certificate", func(t *testing.T) {
		for name, write := range map[string]func(){
			"garbage key":  func() { os.WriteFile(keyFile, []byte("not a key"), 0o600) },
			"missing cert": func() { os.Remove(certFile) },
			"other key": func() {
				ca.issue(t, 999, filepath.Join(dir, "other.pem"), filepath.Join(dir, "otherkey.pem"))
				b, _ := os.ReadFile(filepath.Join(dir, "otherkey.pem"))
				ca.issue(t, 102, certFile, keyFile)
				os.WriteFile(keyFile, b, 0o600)
			},
		} {
			write()
			if err := f.Reload(); err == nil {
				t.Errorf("%s: Reload succeeded", name)
			}
			if got := serialOf(f); got != 101 {
				t.Errorf("%s: serial %d, want the old 101", name, got)
			}
		}
	})

	t.Run("watch: poll and SIGHUP", func(t *testing.T) {
		hup := make(chan os.Signal, 1)
		watch := func(every time.Duration) (stop func()) {
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				f.Watch(ctx, every, hup)
				close(done)
			}()
			return func() {
				cancel()
				<-done
			}
		}

		stop := watch(20 * time.Millisecond)
		ca.issue(t, 103, certFile, keyFile)
		waitFor(t, "the poll to load serial 103", func() bool { return serialOf(f) == 103 })
		os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n"), 0o644)
		waitFor(t, "the poll to log the bad file", func() bool { return logs.contains("cannot reload the certificate") })
		stop()
		if got := serialOf(f); got != 103 {
			t.Fatalf("after a bad file: serial %d, want the old 103", got)
		}

		// With a poll too slow to matter, SIGHUP loads at once.
		stop = watch(time.Hour)
		defer stop()
		ca.issue(t, 104, certFile, keyFile)
		hup <- os.Interrupt // any value stands for the signal
		waitFor(t, "SIGHUP to load serial 104", func() bool { return serialOf(f) == 104 })
	})
}

func TestLoadFilesErrors(t *testing.T) {
	log, _ := newLog(t)
	dir := t.TempDir()
	if _, err := LoadFiles(filepath.Join(dir, "nope.pem"), filepath.Join(dir, "nokey.pem"), log); err == nil || !strings.Contains(err.Error(), "nope.pem") {
		t.Errorf("missing files: %v, want an error naming the file", err)
	}
}

func TestSelfSigned(t *testing.T) {
	log, logs := newLog(t)
	dir := filepath.Join(t.TempDir(), "data") // created on demand
	hosts := []string{"localhost", "parley-box", "127.0.0.1", "::1", "203.0.113.7"}

	cert, created, err := SelfSigned(dir, hosts, log)
	if err != nil {
		t.Fatal(err)
	}
	if !created {
		t.Error("first call: created = false")
	}
	leaf := cert.Leaf
	for _, h := range hosts {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not name %s: %v", h, err)
		}
	}
	if leaf.IsCA {
		t.Error("a self-signed server certificate must not be a CA (Firefox refuses it)")
	}
	if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || leaf.PublicKey.(*ecdsa.PublicKey).Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > 826*24*time.Hour {
		t.Errorf("valid for %v, longer than Apple's 825 days", life)
	}
	// It verifies as its own root, as a client that pinned it would check.
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "parley-box"}); err != nil {
		t.Errorf("verify against itself: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, SelfSignedKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	fp := Fingerprint(cert.Certificate[0])
	if !regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`).MatchString(fp) {
		t.Errorf("fingerprint %q is not 32 colon-separated hex bytes", fp)
	}

	t.Run("kept", func(t *testing.T) {
		again, created, err := SelfSigned(dir, append(hosts, "new-name"), log)
		if err != nil {
			t.Fatal(err)
		}
		if created || Fingerprint(again.Certificate[0]) != fp {
			t.Errorf("second call made a new certificate (created %v)", created)
		}
		if !logs.contains("new-name") {
			t.Error("a host the kept certificate lacks was not logged")
		}
	})

	t.Run("renewed when it expires soon", func(t *testing.T) {
		old := filepath.Join(t.TempDir(), "old")
		os.MkdirAll(old, 0o700)
		certPEM, keyPEM, err := generate(hosts, time.Now().Add(-selfSignedLifetime+24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(old, SelfSignedCertFile), certPEM, 0o644)
		os.WriteFile(filepath.Join(old, SelfSignedKeyFile), keyPEM, 0o600)
		renewed, created, err := SelfSigned(old, hosts, log)
		if err != nil {
			t.Fatal(err)
		}
		if !created || time.Until(renewed.Leaf.NotAfter) < 800*24*time.Hour {
			t.Errorf("created %v, not after %v: want a new certificate", created, renewed.Leaf.NotAfter)
		}
	})

	t.Run("unreadable files are an error, not overwritten", func(t *testing.T) {
		bad := t.TempDir()
		os.WriteFile(filepath.Join(bad, SelfSignedCertFile), []byte("junk"), 0o644)
		if _, _, err := SelfSigned(bad, hosts, log); err == nil || !strings.Contains(err.Error(), "delete") {
			t.Errorf("junk files: %v, want an error saying to delete them", err)
		}
		if b, _ := os.ReadFile(filepath.Join(bad, SelfSignedCertFile)); string(b) != "junk" {
			t.Error("the junk file was overwritten")
		}
	})
}

func TestACMEConfig(t *testing.T) {
	log, _ := newLog(t)
	dir := t.TempDir()
	cfg := ACMEConfig{Domains: []string{"Chat.Example.com."}, DirectoryURL: "https://127.0.0.1:1/dir", CacheDir: filepath.Join(dir, "acme")}

	a, err := NewACME(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(cfg.CacheDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("cache folder: %v %v, want mode 0700", fi, err)
	}
	for host, ok := range map[string]bool{
		"chat.example.com":    true,
		"CHAT.example.com":    true,
		"chat.example.com:80": true, // HTTP-01 through a port that is not 80
		"example.com":         false,
		"evil.com":            false,
	} {
		if err := a.hostPolicy(context.Background(), host); (err == nil) != ok {
			t.Errorf("hostPolicy(%q) = %v, want ok=%v", host, err, ok)
		} else if err != nil && !errors.Is(err, errNotOurs) {
			t.Errorf("hostPolicy(%q) = %v, want errNotOurs", host, err)
		}
	}

	t.Run("CA file", func(t *testing.T) {
		c := cfg
		c.CAFile = filepath.Join(dir, "missing.pem")
		if _, err := NewACME(c, log); err == nil || !strings.Contains(err.Error(), "missing.pem") {
			t.Errorf("missing CA file: %v", err)
		}
		os.WriteFile(filepath.Join(dir, "empty.pem"), []byte("nothing"), 0o644)
		c.CAFile = filepath.Join(dir, "empty.pem")
		if _, err := NewACME(c, log); err == nil || !strings.Contains(err.Error(), "no PEM") {
			t.Errorf("CA file without certificates: %v", err)
		}
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
