package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Names of the self-signed certificate's files in the data folder.
const (
	SelfSignedCertFile = "cert.pem"
	SelfSignedKeyFile  = "key.pem"
)

const (
	// selfSignedLifetime is the validity of a generated certificate: the most
	// that Apple's platforms accept for any TLS server certificate (825 days).
	selfSignedLifetime = 825 * 24 * time.Hour
	// selfSignedRenewBefore: a kept certificate that expires sooner than this
	// is replaced at start.
	selfSignedRenewBefore = 30 * 24 * time.Hour
)

// SelfSigned returns the self-signed certificate kept in dir as cert.pem and
// key.pem. When there is none, or the kept one expires within 30 days, it
// first generates one (an ECDSA P-256 key, the certificate valid for 825 days
// for hosts: DNS names and IP addresses) and writes it there, the key
// readable by the owner only; created reports that. A kept certificate is
// reused as it is, so its fingerprint stays what users have verified; hosts
// it does not name are logged with a hint to delete it. Files that exist but
// cannot be loaded are an error, not a reason to overwrite them.
func SelfSigned(dir string, hosts []string, log *slog.Logger) (cert *tls.Certificate, created bool, err error) {
	certPath := filepath.Join(dir, SelfSignedCertFile)
	keyPath := filepath.Join(dir, SelfSignedKeyFile)
	now := time.Now()

	_, statErr := os.Stat(certPath)
	if statErr == nil {
		kept, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return nil, false, fmt.Errorf("load the self-signed certificate kept in %s (delete %s and %s to make a new one): %w",
				dir, SelfSignedCertFile, SelfSignedKeyFile, err)
		}
		if kept.Leaf == nil {
			if kept.Leaf, err = x509.ParseCertificate(kept.Certificate[0]); err != nil {
				return nil, false, fmt.Errorf("load the self-signed certificate %s: %w", certPath, err)
			}
		}
		if now.Add(selfSignedRenewBefore).Before(kept.Leaf.NotAfter) {
			for _, h := range hosts {
				if kept.Leaf.VerifyHostname(h) != nil {
					log.Warn("tls: the kept self-signed certificate does not name this host; delete its files to make a new one (its fingerprint will change)",
						"host", h, "cert", certPath, "key", keyPath)
				}
			}
			return &kept, false, nil
		}
		log.Info("tls: the kept self-signed certificate expires soon; making a new one", "not_after", kept.Leaf.NotAfter, "cert", certPath)
	} else if !errors.Is(statErr, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("self-signed certificate: %w", statErr)
	}

	certPEM, keyPEM, err := generate(hosts, now)
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	// The key first: a certificate without its key is an error at the next
	// start, a key without its certificate is simply replaced.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	made, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("self-signed certificate: %w", err)
	}
	if made.Leaf == nil {
		if made.Leaf, err = x509.ParseCertificate(made.Certificate[0]); err != nil {
			return nil, false, fmt.Errorf("self-signed certificate: %w", err)
		}
	}
	return &made, true, nil
}

// Fingerprint returns the SHA-256 fingerprint of a DER certificate the way
// browsers show it: upper-case hex bytes joined by colons.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	parts := make([]string, 0, len(sum))
	for i := 0; i < len(h); i += 2 {
		parts = append(parts, h[i:i+2])
	}
	return strings.Join(parts, ":")
}

// generate makes a key and a self-signed certificate for hosts, in PEM.
func generate(hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, fmt.Errorf("generate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"Parley"}, CommonName: "Parley self-signed"},
		NotBefore:    now.Add(-time.Hour), // a client clock a little behind still accepts it
		NotAfter:     now.Add(selfSignedLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		// A leaf, not a CA: Firefox refuses a CA certificate as a server's
		// own even when the user accepts it.
		BasicConstraintsValid: true,
	}
	seen := make(map[string]bool)
	for _, h := range hosts {
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip, err := netip.ParseAddr(h); err == nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.Unmap().AsSlice()))
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(tmpl.DNSNames) > 0 {
		tmpl.Subject.CommonName = tmpl.DNSNames[0]
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// writeFileAtomic writes data to a new file beside name and renames it over
// name, so that a reader sees the old file or the new one, never a part.
func writeFileAtomic(name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
