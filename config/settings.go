package config

import (
	"cmp"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// setting is one configurable value: its flag, its YAML key, its help text, and
// how to reach the field in a Config.
type setting struct {
	flag  string
	key   string // dotted YAML key
	usage string
	field func(c *Config) any // pointer to the field
}

// settings is the one list of every setting. Flag names are the public contract
// (see DESIGN.md); the environment variable of each is PARLEY_ + the flag in
// upper snake case.
var settings = []setting{
	{"listen", "listen", "HTTP (HTTPS when a certificate is set) address for the page, /ws and /api; with --acme-domain and listen set nowhere (file, env, flag) it is :443", func(c *Config) any { return &c.Listen }},
	{"public-ip", "public_ip", "address clients are told to reach for TURN relays and SFU media (default: the default-route interface's address)", func(c *Config) any { return &c.PublicIP }},
	{"tls-cert", "tls.cert", "PEM certificate chain file; serves HTTPS and TURN over TLS", func(c *Config) any { return &c.TLS.Cert }},
	{"tls-key", "tls.key", "PEM private key file for --tls-cert", func(c *Config) any { return &c.TLS.Key }},
	{"tls-self-signed", "tls.self_signed", "serve HTTPS with a self-signed certificate kept in --data-dir (LAN use)", func(c *Config) any { return &c.TLS.SelfSigned }},
	{"acme-domain", "tls.acme_domains", "comma-separated DNS names to get certificates for over ACME (e.g. Let's Encrypt)", func(c *Config) any { return &c.TLS.ACMEDomains }},
	{"acme-email", "tls.acme_email", "contact address for the ACME account (optional)", func(c *Config) any { return &c.TLS.ACMEEmail }},
	{"acme-dir", "tls.acme_directory", "ACME directory URL", func(c *Config) any { return &c.TLS.ACMEDirectory }},
	{"acme-ca-file", "tls.acme_ca_file", "PEM roots to trust for a private ACME CA's HTTPS", func(c *Config) any { return &c.TLS.ACMECAFile }},
	{"http-redirect-listen", "tls.redirect_listen", "plain-HTTP address that redirects to HTTPS and answers ACME challenges when TLS is on (empty: off)", func(c *Config) any { return &c.TLS.RedirectListen }},
	{"data-dir", "data_dir", "folder for generated certificates and the ACME account", func(c *Config) any { return &c.DataDir }},
	{"metrics-listen", "metrics.listen", "serve /metrics on this address instead of the main listener", func(c *Config) any { return &c.Metrics.Listen }},
	{"metrics-token", "metrics.token", "bearer token required for /metrics (optional)", func(c *Config) any { return &c.Metrics.Token }},
	{"create-token", "admission.create_token", "token required to create rooms (optional; for a public server)", func(c *Config) any { return &c.Admission.CreateToken }},
	{"rooms-per-client", "admission.rooms_per_client", "rooms one client address may create per hour", func(c *Config) any { return &c.Admission.RoomsPerClient }},
	{"connections-per-client", "admission.connections_per_client", "WebSockets one client address may hold at once", func(c *Config) any { return &c.Admission.ConnectionsPerClient }},
	{"room-mode", "rooms.default_mode", "mode of rooms created without an explicit one: p2p (mesh) or sfu", func(c *Config) any { return &c.Rooms.DefaultMode }},
	{"max-participants", "rooms.max_participants", "participants per room; the next joiner gets \"room is full\"", func(c *Config) any { return &c.Rooms.MaxParticipants }},
	{"room-empty-ttl", "rooms.empty_ttl", "how long a room with nobody in it stays joinable", func(c *Config) any { return &c.Rooms.EmptyTTL }},
	{"allowed-origins", "signaling.allowed_origins", "comma-separated extra origins allowed to open the WebSocket (the server's own origin always is)", func(c *Config) any { return &c.Signaling.AllowedOrigins }},
	{"message-rate", "signaling.message_rate", "signaling messages per second one connection may send, sustained", func(c *Config) any { return &c.Signaling.MessageRate }},
	{"message-burst", "signaling.message_burst", "signaling messages one connection may send at once above the rate", func(c *Config) any { return &c.Signaling.MessageBurst }},
	{"ping-interval", "signaling.ping_interval", "how often each WebSocket is pinged", func(c *Config) any { return &c.Signaling.PingInterval }},
	{"peer-timeout", "signaling.peer_timeout", "silence after which a participant is reported as left", func(c *Config) any { return &c.Signaling.PeerTimeout }},
	{"turn", "turn.enabled", "run the built-in STUN/TURN server", func(c *Config) any { return &c.TURN.Enabled }},
	{"turn-listen", "turn.listen", "STUN/TURN address over UDP and TCP", func(c *Config) any { return &c.TURN.Listen }},
	{"turn-tls-listen", "turn.tls_listen", "TURN-over-TLS address, when a certificate is set", func(c *Config) any { return &c.TURN.TLSListen }},
	{"turn-secret", "turn.secret", "shared secret of the TURN REST credential scheme (default: random per start)", func(c *Config) any { return &c.TURN.Secret }},
	{"turn-credential-ttl", "turn.credential_ttl", "lifetime of the TURN credentials handed to a participant", func(c *Config) any { return &c.TURN.CredentialTTL }},
	{"turn-relay-ports", "turn.relay_ports", "UDP port range MIN-MAX for relay allocations", func(c *Config) any { return &c.TURN.RelayPorts }},
	{"turn-allow-peers", "turn.allow_peers", "comma-separated CIDRs exempt from the relay deny-list (e.g. a LAN)", func(c *Config) any { return &c.TURN.AllowPeers }},
	{"turn-user-quota", "turn.user_quota", "TURN allocations one user may hold at once", func(c *Config) any { return &c.TURN.UserQuota }},
	{"turn-total-quota", "turn.total_quota", "TURN allocations the server holds at once", func(c *Config) any { return &c.TURN.TotalQuota }},
	{"turn-external-urls", "turn.external_urls", "comma-separated stun:/turn:/turns: URLs of an existing TURN server to hand out", func(c *Config) any { return &c.TURN.ExternalURLs }},
	{"turn-external-secret", "turn.external_secret", "use-auth-secret of the external TURN server", func(c *Config) any { return &c.TURN.ExternalSecret }},
	{"sfu-udp-port", "sfu.udp_port", "the one UDP port that carries all SFU media", func(c *Config) any { return &c.SFU.UDPPort }},
	{"sfu-tcp-port", "sfu.tcp_port", "ICE-TCP fallback port for SFU media", func(c *Config) any { return &c.SFU.TCPPort }},
	{"log-format", "log.format", "log format: text or json", func(c *Config) any { return &c.Log.Format }},
	{"log-level", "log.level", "log level: debug, info, warn or error", func(c *Config) any { return &c.Log.Level }},
}

// EnvName returns the environment variable of a flag: PARLEY_ + upper snake case.
func EnvName(flagName string) string {
	return "PARLEY_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ErrHelp is returned by Load when --help was asked for; the usage has been
// written to the output.
var ErrHelp = flag.ErrHelp

// Load builds the configuration from defaults, the YAML file named by --config or
// PARLEY_CONFIG, the PARLEY_* environment (looked up with getenv) and args, then
// validates it. Usage and flag errors are written to out.
func Load(args []string, getenv func(string) string, out io.Writer) (Config, error) {
	// First pass: syntax of the flags and the config file's name.
	scratch := Default()
	fs, configFile := newFlagSet(&scratch, out)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q (settings are flags like --listen :8080)", fs.Arg(0))
	}
	path := *configFile
	if path == "" {
		path = getenv("PARLEY_CONFIG")
	}

	cfg := Default()
	given := make(map[string]bool) // YAML keys of the settings some layer set
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		if err := decodeYAML(b, &cfg, given); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}

	for _, s := range settings {
		name := EnvName(s.flag)
		if v := getenv(name); v != "" {
			if err := set(s.field(&cfg), v); err != nil {
				return Config{}, fmt.Errorf("%s (%s): %w", name, s.key, err)
			}
			given[s.key] = true
		}
	}

	// Second pass: flags over everything else.
	fs, _ = newFlagSet(&cfg, io.Discard)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	keyOf := make(map[string]string, len(settings))
	for _, s := range settings {
		keyOf[s.flag] = s.key
	}
	fs.Visit(func(f *flag.Flag) { given[keyOf[f.Name]] = true })

	// With ACME, HTTPS belongs on 443 unless the user placed it: the CA
	// validates TLS-ALPN-01 on port 443 only, and https:// links to the
	// certified name carry no port.
	if len(cfg.TLS.ACMEDomains) > 0 && !given["listen"] {
		cfg.Listen = ACMEListen
	}

	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("invalid configuration:\n%w", err)
	}
	return cfg, nil
}

// decodeYAML reads a YAML document over the values already in cfg and
// marks in given the dotted key of each setting it sets ("key:" with no
// value sets nothing). Each key is looked up in the settings table and its
// value parsed on its own, so that an unknown key or a bad value is reported
// with its dotted YAML key (yaml's own errors name only a line and a Go type).
func decodeYAML(b []byte, cfg *Config, given map[string]bool) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return err
	}
	if len(doc.Content) == 0 {
		return nil // empty file
	}
	byKey := make(map[string]setting, len(settings))
	sections := make(map[string]bool)
	for _, s := range settings {
		byKey[s.key] = s
		if sec, _, ok := strings.Cut(s.key, "."); ok {
			sections[sec] = true
		}
	}
	var walk func(prefix string, n *yaml.Node) error
	walk = func(prefix string, n *yaml.Node) error {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: %s must be a mapping of keys to values", n.Line, cmp.Or(prefix, "the file"))
		}
		seen := make(map[string]int)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := k.Value
			if prefix != "" {
				key = prefix + "." + key
			}
			if line, dup := seen[key]; dup {
				return fmt.Errorf("line %d: %s is already set at line %d", k.Line, key, line)
			}
			seen[key] = k.Line
			s, isSetting := byKey[key]
			switch {
			case strings.Contains(k.Value, "."):
				return fmt.Errorf("line %d: unknown key %s (nest sections instead of writing dotted keys)", k.Line, key)
			case v.Tag == "!!null" && (isSetting || sections[key]):
				// "key:" with no value leaves the value as it was.
			case isSetting:
				if err := decodeValue(s.field(cfg), v); err != nil {
					return fmt.Errorf("line %d: %s: %w", v.Line, key, err)
				}
				given[key] = true
			case prefix == "" && sections[key]:
				if err := walk(key, v); err != nil {
					return err
				}
			default:
				return fmt.Errorf("line %d: unknown key %s", k.Line, key)
			}
		}
		return nil
	}
	return walk("", doc.Content[0])
}

// decodeValue parses one YAML value into the field p points to, with the same
// parser as the environment and the flags; a list may also be a YAML sequence.
func decodeValue(p any, v *yaml.Node) error {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch {
	case v.Kind == yaml.ScalarNode:
		return set(p, v.Value)
	case v.Kind == yaml.SequenceNode:
		if _, ok := p.(*[]string); ok {
			var list []string
			if err := v.Decode(&list); err != nil {
				return fmt.Errorf("must be a list of strings")
			}
			*p.(*[]string) = list
			return nil
		}
	}
	return fmt.Errorf("must be a single value, not a list or mapping")
}

func newFlagSet(cfg *Config, out io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("parley", flag.ContinueOnError)
	fs.SetOutput(out)
	configFile := fs.String("config", "", "YAML configuration file (env PARLEY_CONFIG)")
	for _, s := range settings {
		p := s.field(cfg)
		usage := fmt.Sprintf("%s (YAML %s, env %s)", s.usage, s.key, EnvName(s.flag))
		if b, ok := p.(*bool); ok {
			fs.BoolVar(b, s.flag, *b, usage)
			continue
		}
		fs.Var(fieldValue{p}, s.flag, usage)
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "Usage: parley [flags]\n\nParley serves video calls from one binary. With no flags it runs on its embedded defaults.\nPrecedence: defaults < --config file < PARLEY_* environment < flags.\n\n")
		fs.PrintDefaults()
	}
	return fs, configFile
}

// fieldValue adapts a pointer to a Config field to flag.Value.
type fieldValue struct{ p any }

func (v fieldValue) String() string {
	switch p := v.p.(type) {
	case nil:
		return ""
	case *string:
		return *p
	case *int:
		return strconv.Itoa(*p)
	case *float64:
		return strconv.FormatFloat(*p, 'g', -1, 64)
	case *time.Duration:
		return p.String()
	case *[]string:
		return strings.Join(*p, ",")
	case *PortRange:
		return p.String()
	}
	return fmt.Sprint(v.p)
}

func (v fieldValue) Set(s string) error { return set(v.p, s) }

// set parses s into the field p points to.
func set(p any, s string) error {
	switch p := p.(type) {
	case *string:
		*p = s
	case *bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("%q is not true or false", s)
		}
		*p = b
	case *int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", s)
		}
		*p = n
	case *float64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", s)
		}
		*p = f
	case *time.Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("%q is not a duration like 90s or 1h", s)
		}
		*p = d
	case *[]string:
		*p = nil
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	case *PortRange:
		return p.UnmarshalText([]byte(s))
	default:
		panic(fmt.Sprintf("config: no parser for %T", p))
	}
	return nil
}
