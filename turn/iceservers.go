package turn

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/parley-chat/parley/config"
)

// ICEServer is one entry of a browser's RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`                 // stun:, turn: and turns: URLs (RFC 7064, RFC 7065)
	Username   string   `json:"username,omitempty"`   // "<unix-expiry>:<participant-id>"
	Credential string   `json:"credential,omitempty"` // base64(HMAC-SHA1(secret, Username))
}

// Endpoint is where clients reach a STUN/TURN server.
type Endpoint struct {
	// Host is the address (or name) clients dial for stun: and turn:. An IPv6
	// address is written bare; URLs get the brackets.
	Host string
	// Port carries STUN/TURN over both UDP and TCP.
	Port int
	// TLSHost is the host of turns: URLs. Browsers check the server
	// certificate against it, so it should be a name the certificate holds.
	// Empty means Host.
	TLSHost string
	// TLSPort carries TURN over TLS; 0 means no turns: URL.
	TLSPort int
	// SharedTLSPort carries TURN over TLS too, on the HTTPS port (443-style,
	// for clients that can reach nothing else); 0 means none.
	SharedTLSPort int
}

// BuiltinICEServers returns the ICE servers of a Parley TURN server at e: a
// stun: entry without credentials, and one entry with turn: over UDP and TCP
// (and turns: for e.TLSPort and e.SharedTLSPort when set) carrying username
// and password.
func BuiltinICEServers(e Endpoint, username, password string) []ICEServer {
	hp := net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
	turnURLs := []string{
		"turn:" + hp + "?transport=udp",
		"turn:" + hp + "?transport=tcp",
	}
	tlsHost := e.TLSHost
	if tlsHost == "" {
		tlsHost = e.Host
	}
	if e.TLSPort != 0 {
		turnURLs = append(turnURLs, "turns:"+net.JoinHostPort(tlsHost, strconv.Itoa(e.TLSPort))+"?transport=tcp")
	}
	if e.SharedTLSPort != 0 && e.SharedTLSPort != e.TLSPort {
		turnURLs = append(turnURLs, "turns:"+net.JoinHostPort(tlsHost, strconv.Itoa(e.SharedTLSPort))+"?transport=tcp")
	}
	return []ICEServer{
		{URLs: []string{"stun:" + hp}},
		{URLs: turnURLs, Username: username, Credential: password},
	}
}

// ExternalICEServers returns one entry with the given stun:/turn:/turns: URLs
// of an external server (e.g. coturn with use-auth-secret) and credentials.
func ExternalICEServers(urls []string, username, password string) []ICEServer {
	if len(urls) == 0 {
		return nil
	}
	return []ICEServer{{URLs: append([]string(nil), urls...), Username: username, Credential: password}}
}

// Provider hands each participant its own credentials and the ICE server
// list: the built-in server, an external one (turn.external_urls), or both.
// Static after construction; safe for concurrent use.
type Provider struct {
	builtin        *Endpoint // nil when the built-in server is off
	builtinSecret  string
	externalURLs   []string
	externalSecret string
	ttl            time.Duration
	now            func() time.Time
}

// NewProvider returns a Provider for cfg. builtin is the running built-in
// server, or nil when it is off; tlsHost is the name turns: URLs carry (see
// Endpoint.TLSHost and CertificateHost).
func NewProvider(cfg config.TURN, builtin *Server, tlsHost string) *Provider {
	p := &Provider{
		externalURLs:   append([]string(nil), cfg.ExternalURLs...),
		externalSecret: cfg.ExternalSecret,
		ttl:            cfg.CredentialTTL,
		now:            time.Now,
	}
	if builtin != nil {
		e := builtin.Endpoint()
		e.TLSHost = tlsHost
		p.builtin = &e
		p.builtinSecret = builtin.secret
		p.now = builtin.now
	}
	return p
}

// ICEServers returns the ICE servers for one participant, with credentials
// valid for the configured turn.credential_ttl.
func (p *Provider) ICEServers(participantID string) []ICEServer {
	var out []ICEServer
	now := p.now()
	if p.builtin != nil {
		u, pw := Credentials(p.builtinSecret, participantID, p.ttl, now)
		out = append(out, BuiltinICEServers(*p.builtin, u, pw)...)
	}
	if len(p.externalURLs) > 0 {
		u, pw := Credentials(p.externalSecret, participantID, p.ttl, now)
		out = append(out, ExternalICEServers(p.externalURLs, u, pw)...)
	}
	return out
}

// CertificateHost returns the first DNS name (not a wildcard) of cert's leaf,
// or "" when it has none: the name turns: URLs should carry so that browsers can verify the
// certificate.
func CertificateHost(cert tls.Certificate) string {
	leaf := cert.Leaf
	if leaf == nil && len(cert.Certificate) > 0 {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return ""
		}
	}
	if leaf == nil {
		return ""
	}
	for _, name := range leaf.DNSNames {
		if !strings.Contains(name, "*") { // a wildcard is no host to dial
			return name
		}
	}
	return ""
}
