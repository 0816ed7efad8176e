// Package config holds Parley's one Config struct, its defaults, and the layering
// that fills it: defaults < YAML file < PARLEY_* environment < command-line flags.
//
// Every setting has a flag, a YAML key and an environment variable. The table in
// settings.go is the single list of them; --help, the YAML keys and the environment
// names all come from it, so they cannot drift apart.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Room modes.
const (
	ModeP2P = "p2p" // mesh: every pair of participants has its own PeerConnection
	ModeSFU = "sfu" // each participant has one PeerConnection to the server
)

// Config is the whole configuration of one Parley process.
type Config struct {
	// Listen is the HTTP (HTTPS when TLS is set) address for the page, /ws and
	// /api. Load makes it ACMEListen when ACME is on and no layer sets it.
	Listen string `yaml:"listen"`
	// PublicIP is the address clients are told to reach for TURN relays and SFU
	// media. Empty means: the address of the interface that carries the default route.
	PublicIP string `yaml:"public_ip"`

	// DataDir keeps what Parley generates: the self-signed certificate, the
	// ACME account and certificates.
	DataDir string `yaml:"data_dir"`

	TLS       TLS       `yaml:"tls"`
	Metrics   Metrics   `yaml:"metrics"`
	Admission Admission `yaml:"admission"`
	Rooms     Rooms     `yaml:"rooms"`
	Signaling Signaling `yaml:"signaling"`
	TURN      TURN      `yaml:"turn"`
	SFU       SFU       `yaml:"sfu"`
	Log       Log       `yaml:"log"`
}

// TLS selects the certificate for HTTPS and TURN over TLS.
type TLS struct {
	Cert string `yaml:"cert"` // PEM certificate chain file, reloaded on SIGHUP or change
	Key  string `yaml:"key"`  // PEM private key file
	// SelfSigned generates a certificate kept in DataDir (for a LAN install).
	SelfSigned bool `yaml:"self_signed"`
	// ACMEDomains are the names to get certificates for over ACME.
	ACMEDomains []string `yaml:"acme_domains"`
	// ACMEEmail is the contact address given to the ACME CA (optional).
	ACMEEmail string `yaml:"acme_email"`
	// ACMEDirectory is the directory URL of the ACME CA.
	ACMEDirectory string `yaml:"acme_directory"`
	// ACMECAFile is a PEM file of roots to trust for the ACME CA's own HTTPS
	// (a private CA); empty means the system roots.
	ACMECAFile string `yaml:"acme_ca_file"`
	// RedirectListen is the plain-HTTP address that redirects to HTTPS (and
	// answers ACME HTTP-01 challenges) when TLS is on; empty turns it off.
	RedirectListen string `yaml:"redirect_listen"`
}

// Enabled reports whether HTTPS is on, by any of the three ways.
func (t TLS) Enabled() bool { return t.Cert != "" || t.SelfSigned || len(t.ACMEDomains) > 0 }

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Listen serves /metrics on its own address; empty serves it on the main
	// listener.
	Listen string `yaml:"listen"`
	// Token, when set, is required as "Authorization: Bearer TOKEN".
	Token string `yaml:"token"`
}

// Admission limits who may create and join rooms.
type Admission struct {
	// CreateToken, when set, is required to create rooms.
	CreateToken string `yaml:"create_token"`
	// RoomsPerClient is how many rooms one client address may create per hour.
	RoomsPerClient int `yaml:"rooms_per_client"`
	// ConnectionsPerClient is how many WebSockets one client address may hold.
	ConnectionsPerClient int `yaml:"connections_per_client"`
}

// Rooms configures room creation and lifetime.
type Rooms struct {
	// DefaultMode is the mode of rooms created without an explicit one.
	DefaultMode string `yaml:"default_mode"`
	// MaxParticipants is the size of a room; the next joiner gets room_full.
	MaxParticipants int `yaml:"max_participants"`
	// EmptyTTL is how long a room with nobody in it stays joinable, counted from
	// its creation or from the moment the last participant left.
	EmptyTTL time.Duration `yaml:"empty_ttl"`
}

// Signaling configures the WebSocket relay.
type Signaling struct {
	// AllowedOrigins are extra origins (scheme://host[:port]) whose pages may open
	// the WebSocket. The server's own origin is always allowed.
	AllowedOrigins []string `yaml:"allowed_origins"`
	// MessageRate is the sustained number of messages per second one connection
	// may send; MessageBurst is how many it may send at once above that.
	MessageRate  float64 `yaml:"message_rate"`
	MessageBurst int     `yaml:"message_burst"`
	// PingInterval is how often the server pings each connection.
	PingInterval time.Duration `yaml:"ping_interval"`
	// PeerTimeout is how long a connection may stay silent (no message, no pong)
	// before it is considered gone and its participant reported as left.
	PeerTimeout time.Duration `yaml:"peer_timeout"`
}

// TURN configures the built-in STUN/TURN server and the credentials handed out.
type TURN struct {
	// Enabled runs the built-in STUN/TURN server.
	Enabled bool `yaml:"enabled"`
	// Listen is the STUN/TURN address for both UDP and TCP.
	Listen string `yaml:"listen"`
	// TLSListen is the TURN-over-TLS address, used when a certificate is set.
	TLSListen string `yaml:"tls_listen"`
	// Secret is the shared secret of the TURN REST credential scheme. Empty means
	// a random secret chosen at start.
	Secret string `yaml:"secret"`
	// CredentialTTL is the lifetime of the credentials handed to a participant.
	CredentialTTL time.Duration `yaml:"credential_ttl"`
	// RelayPorts is the UDP port range for relay allocations.
	RelayPorts PortRange `yaml:"relay_ports"`
	// AllowPeers are CIDRs exempt from the relay deny-list (e.g. a LAN).
	AllowPeers []string `yaml:"allow_peers"`
	// UserQuota is the number of allocations one username may hold at once.
	UserQuota int `yaml:"user_quota"`
	// TotalQuota is the number of allocations the server holds at once.
	TotalQuota int `yaml:"total_quota"`
	// ExternalURLs are stun:/turn:/turns: URLs of an existing TURN server (e.g.
	// coturn with use-auth-secret) to hand to participants, with credentials
	// made from ExternalSecret.
	ExternalURLs []string `yaml:"external_urls"`
	// ExternalSecret is the use-auth-secret of the external TURN server.
	ExternalSecret string `yaml:"external_secret"`
}

// SFU configures the media ports of SFU rooms.
type SFU struct {
	UDPPort int `yaml:"udp_port"` // the one UDP port that carries all SFU media
	TCPPort int `yaml:"tcp_port"` // ICE-TCP fallback
}

// Log configures the process log.
type Log struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // debug, info, warn or error
}

// ACMEListen is the listen address when tls.acme_domains is set and no
// layer sets listen: HTTPS on the port the ACME CA and browsers expect.
const ACMEListen = ":443"

// Default returns the embedded defaults: what `parley` with no arguments runs
// on. Load changes one of them: Listen becomes ACMEListen with ACME on.
func Default() Config {
	return Config{
		Listen:  ":8080",
		DataDir: "./parley-data",
		TLS: TLS{
			ACMEDirectory:  "https://acme-v02.api.letsencrypt.org/directory",
			RedirectListen: ":80",
		},
		Admission: Admission{RoomsPerClient: 60, ConnectionsPerClient: 32},
		Rooms: Rooms{
			DefaultMode:     ModeP2P,
			MaxParticipants: 8,
			EmptyTTL:        time.Hour,
		},
		Signaling: Signaling{
			MessageRate:  100,
			MessageBurst: 200,
			PingInterval: 5 * time.Second,
			PeerTimeout:  12 * time.Second,
		},
		TURN: TURN{
			Enabled:       true,
			Listen:        ":3478",
			TLSListen:     ":5349",
			CredentialTTL: 12 * time.Hour,
			RelayPorts:    PortRange{Min: 49152, Max: 65535},
			UserQuota:     10,
			TotalQuota:    10000,
		},
		SFU: SFU{
			UDPPort: 7882,
			TCPPort: 7881,
		},
		Log: Log{Format: "text", Level: "info"},
	}
}

// Validate checks every value and returns all problems at once, each naming its
// YAML key.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}

	checkAddr := func(key, addr string) {
		if _, port, err := net.SplitHostPort(addr); err != nil {
			bad(key, "%q is not host:port (%v)", addr, err)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad(key, "%q has no valid port", addr)
		}
	}
	checkAddr("listen", c.Listen)
	if c.PublicIP != "" {
		if a, err := netip.ParseAddr(c.PublicIP); err != nil {
			bad("public_ip", "%q is not an IP address", c.PublicIP)
		} else if a.IsUnspecified() || a.IsMulticast() {
			bad("public_ip", "%q cannot be reached by clients", c.PublicIP)
		}
	}
	if c.TLS.Cert != "" && c.TLS.Key == "" {
		bad("tls.key", "required when tls.cert is set")
	}
	if c.TLS.Key != "" && c.TLS.Cert == "" {
		bad("tls.cert", "required when tls.key is set")
	}

	ways := 0
	for _, on := range []bool{c.TLS.Cert != "" || c.TLS.Key != "", c.TLS.SelfSigned, len(c.TLS.ACMEDomains) > 0} {
		if on {
			ways++
		}
	}
	if ways > 1 {
		bad("tls", "choose one of tls.cert/tls.key, tls.self_signed and tls.acme_domains")
	}
	for _, d := range c.TLS.ACMEDomains {
		if d == "" || strings.ContainsAny(d, "/:* ") || net.ParseIP(d) != nil {
			bad("tls.acme_domains", "%q is not a DNS name", d)
		}
	}
	if u, err := url.Parse(c.TLS.ACMEDirectory); len(c.TLS.ACMEDomains) > 0 && (err != nil || u.Scheme != "https" || u.Host == "") {
		bad("tls.acme_directory", "%q is not an https:// URL", c.TLS.ACMEDirectory)
	}
	if c.TLS.RedirectListen != "" && c.TLS.Enabled() {
		checkAddr("tls.redirect_listen", c.TLS.RedirectListen)
	}
	if c.DataDir == "" && (c.TLS.SelfSigned || len(c.TLS.ACMEDomains) > 0) {
		bad("data_dir", "required for tls.self_signed and tls.acme_domains")
	}
	if c.Metrics.Listen != "" {
		checkAddr("metrics.listen", c.Metrics.Listen)
	}
	if c.Admission.RoomsPerClient < 1 {
		bad("admission.rooms_per_client", "%d must be at least 1", c.Admission.RoomsPerClient)
	}
	if c.Admission.ConnectionsPerClient < 1 {
		bad("admission.connections_per_client", "%d must be at least 1", c.Admission.ConnectionsPerClient)
	}

	switch c.Rooms.DefaultMode {
	case ModeP2P, ModeSFU:
	default:
		bad("rooms.default_mode", "%q is not p2p or sfu", c.Rooms.DefaultMode)
	}
	if c.Rooms.MaxParticipants < 2 || c.Rooms.MaxParticipants > 1000 {
		bad("rooms.max_participants", "%d is outside 2..1000", c.Rooms.MaxParticipants)
	}
	if c.Rooms.EmptyTTL <= 0 {
		bad("rooms.empty_ttl", "%v must be positive", c.Rooms.EmptyTTL)
	}

	for _, o := range c.Signaling.AllowedOrigins {
		if u, err := url.Parse(o); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			bad("signaling.allowed_origins", "%q is not an origin like https://example.com", o)
		}
	}
	if c.Signaling.MessageRate <= 0 {
		bad("signaling.message_rate", "%v must be positive", c.Signaling.MessageRate)
	}
	if c.Signaling.MessageBurst < 1 {
		bad("signaling.message_burst", "%d must be at least 1", c.Signaling.MessageBurst)
	}
	if c.Signaling.PingInterval <= 0 {
		bad("signaling.ping_interval", "%v must be positive", c.Signaling.PingInterval)
	}
	if c.Signaling.PeerTimeout <= c.Signaling.PingInterval {
		bad("signaling.peer_timeout", "%v must be longer than signaling.ping_interval (%v)", c.Signaling.PeerTimeout, c.Signaling.PingInterval)
	}

	if c.TURN.Enabled {
		checkAddr("turn.listen", c.TURN.Listen)
		if c.TLS.Enabled() {
			checkAddr("turn.tls_listen", c.TURN.TLSListen)
		}
	}
	if c.TURN.CredentialTTL < time.Minute {
		bad("turn.credential_ttl", "%v is shorter than a minute", c.TURN.CredentialTTL)
	}
	if c.TURN.RelayPorts.Min < 1024 || c.TURN.RelayPorts.Max < c.TURN.RelayPorts.Min {
		bad("turn.relay_ports", "%q must be a range MIN-MAX within 1024-65535", c.TURN.RelayPorts)
	}
	for _, p := range c.TURN.AllowPeers {
		if _, err := netip.ParsePrefix(p); err != nil {
			bad("turn.allow_peers", "%q is not a CIDR like 192.168.1.0/24", p)
		}
	}
	if c.TURN.UserQuota < 1 {
		bad("turn.user_quota", "%d must be at least 1", c.TURN.UserQuota)
	}
	if c.TURN.TotalQuota < c.TURN.UserQuota {
		bad("turn.total_quota", "%d must be at least turn.user_quota (%d)", c.TURN.TotalQuota, c.TURN.UserQuota)
	}
	for _, u := range c.TURN.ExternalURLs {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			bad("turn.external_urls", "%q is not a stun:, turn: or turns: URL", u)
		}
	}
	if len(c.TURN.ExternalURLs) > 0 && c.TURN.ExternalSecret == "" {
		bad("turn.external_secret", "required when turn.external_urls is set")
	}

	for key, p := range map[string]int{"sfu.udp_port": c.SFU.UDPPort, "sfu.tcp_port": c.SFU.TCPPort} {
		if p < 0 || p > 65535 {
			bad(key, "%d is not a port", p)
		}
	}

	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q is not text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	return errors.Join(errs...)
}

// PortRange is an inclusive range of ports, written "MIN-MAX".
type PortRange struct {
	Min, Max int
}

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// MarshalText writes the range as "MIN-MAX".
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText reads "MIN-MAX" or a single port.
func (r *PortRange) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	lo, hi, found := strings.Cut(s, "-")
	if !found {
		hi = lo
	}
	min, err1 := strconv.Atoi(strings.TrimSpace(lo))
	max, err2 := strconv.Atoi(strings.TrimSpace(hi))
	if err1 != nil || err2 != nil || min < 1 || max > 65535 || min > max {
		return fmt.Errorf("%q is not a port range like 49152-65535", s)
	}
	r.Min, r.Max = min, max
	return nil
}
