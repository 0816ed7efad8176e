package config_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/parley-chat/parley/config"
)

// env is a fake environment for Load.
type env map[string]string

func (e env) get(name string) string { return e[name] }

// writeYAML writes a config file into a fresh temporary directory.
func writeYAML(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// load runs config.Load with a config file holding yaml (none if empty), the
// environment e and the flags args.
func load(t *testing.T, yamlText string, e env, args ...string) (config.Config, error) {
	t.Helper()
	if yamlText != "" {
		args = append([]string{"--config", writeYAML(t, yamlText)}, args...)
	}
	return config.Load(args, e.get, io.Discard)
}

// layerValues gives every setting one valid value per layer (YAML file,
// environment, flags), in the form --help prints it. Each column is a valid
// configuration on its own.
var layerValues = map[string][3]string{
	"listen":                           {"127.0.0.1:1001", ":1002", "[::1]:1003"},
	"public_ip":                        {"192.0.2.1", "192.0.2.2", "2001:db8::3"},
	"tls.cert":                         {"/y/cert.pem", "/e/cert.pem", "/f/cert.pem"},
	"tls.key":                          {"/y/key.pem", "/e/key.pem", "/f/key.pem"},
	"rooms.default_mode":               {"p2p", "p2p", "p2p"},
	"rooms.max_participants":           {"3", "4", "1000"},
	"rooms.empty_ttl":                  {"1m0s", "2h0m0s", "3s"},
	"signaling.allowed_origins":        {"https://a.example,https://b.example", "http://localhost:3000", "https://c.example:8443"},
	"signaling.message_rate":           {"1.5", "20", "300"},
	"signaling.message_burst":          {"1", "20", "300"},
	"signaling.ping_interval":          {"1s", "2s", "3s"},
	"signaling.peer_timeout":           {"10s", "20s", "30s"},
	"turn.enabled":                     {"false", "true", "false"},
	"turn.listen":                      {":2001", ":2002", ":2003"},
	"turn.tls_listen":                  {":3001", ":3002", ":3003"},
	"turn.secret":                      {"y-secret", "e-secret", "f-secret"},
	"turn.credential_ttl":              {"1h0m0s", "2h0m0s", "1m0s"},
	"turn.relay_ports":                 {"2000-2100", "3000-3000", "4000-65535"},
	"turn.allow_peers":                 {"10.0.0.0/8", "192.168.0.0/16,fd00::/8", "172.16.0.0/12"},
	"turn.user_quota":                  {"1", "2", "3"},
	"turn.total_quota":                 {"100", "200", "3"},
	"turn.external_urls":               {"turn:turn.example:3478", "stun:a.example,turns:b.example:5349", "turn:c.example"},
	"turn.external_secret":             {"y-ext", "e-ext", "f-ext"},
	"sfu.udp_port":                     {"5001", "5002", "0"},
	"sfu.tcp_port":                     {"6001", "6002", "6003"},
	"log.format":                       {"json", "text", "json"},
	"log.level":                        {"debug", "warn", "error"},
	"tls.self_signed":                  {"false", "false", "false"}, // tls.cert is set in every layer, and the three TLS ways exclude each other
	"tls.acme_domains":                 {"", "", ""},                // likewise
	"tls.acme_email":                   {"y@a.example", "e@a.example", "f@a.example"},
	"tls.acme_directory":               {"https://y.example/dir", "https://e.example/dir", "https://f.example/dir"},
	"tls.acme_ca_file":                 {"/y/ca.pem", "/e/ca.pem", "/f/ca.pem"},
	"tls.redirect_listen":              {":81", ":82", ":83"},
	"data_dir":                         {"/y/data", "/e/data", "/f/data"},
	"metrics.listen":                   {"127.0.0.1:9101", "127.0.0.1:9102", "127.0.0.1:9103"},
	"metrics.token":                    {"y-token", "e-token", "f-token"},
	"admission.create_token":           {"y-create", "e-create", "f-create"},
	"admission.rooms_per_client":       {"1", "2", "3"},
	"admission.connections_per_client": {"4", "5", "6"},
}

// layerYAML writes column i of layerValues as a YAML file: lists as
// sequences, everything else as quoted strings.
func layerYAML(i int) string {
	sections := map[string][]string{}
	var top []string
	for _, s := range config.SettingsForTest() {
		v := layerValues[s.Key][i]
		var text string
		if strings.Contains(s.Key, "origins") || strings.Contains(s.Key, "peers") || strings.Contains(s.Key, "urls") || strings.Contains(s.Key, "domains") {
			var items []string
			for _, item := range strings.Split(v, ",") {
				items = append(items, strconv.Quote(item))
			}
			text = "[" + strings.Join(items, ", ") + "]"
			if v == "" {
				text = "[]"
			}
		} else {
			text = strconv.Quote(v)
		}
		sec, name, nested := strings.Cut(s.Key, ".")
		if !nested {
			top = append(top, fmt.Sprintf("%s: %s\n", s.Key, text))
			continue
		}
		sections[sec] = append(sections[sec], fmt.Sprintf("  %s: %s\n", name, text))
	}
	var b strings.Builder
	b.WriteString("# every setting\n")
	for _, line := range top {
		b.WriteString(line)
	}
	for _, sec := range slices.Sorted(func(yield func(string) bool) {
		for k := range sections {
			if !yield(k) {
				return
			}
		}
	}) {
		b.WriteString(sec + ":\n")
		for _, line := range sections[sec] {
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestSettingsTableIsComplete(t *testing.T) {
	// Every setting has a row in layerValues, and the keys of the settings
	// table are exactly the YAML leaves of Config.
	out, err := yaml.Marshal(config.Default())
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	var leaves []string
	for k, v := range doc {
		if m, ok := v.(map[string]any); ok {
			for k2 := range m {
				leaves = append(leaves, k+"."+k2)
			}
		} else {
			leaves = append(leaves, k)
		}
	}
	var keys []string
	flags := map[string]bool{}
	for _, s := range config.SettingsForTest() {
		keys = append(keys, s.Key)
		if flags[s.Flag] {
			t.Errorf("flag --%s is in the table twice", s.Flag)
		}
		flags[s.Flag] = true
		if _, ok := layerValues[s.Key]; !ok {
			t.Errorf("setting %s has no test values in layerValues", s.Key)
		}
		if want := "PARLEY_" + strings.ToUpper(strings.ReplaceAll(s.Flag, "-", "_")); s.Env != want {
			t.Errorf("env of --%s = %s, want %s", s.Flag, s.Env, want)
		}
	}
	slices.Sort(leaves)
	slices.Sort(keys)
	if !slices.Equal(leaves, keys) {
		t.Errorf("settings table keys\n  %v\ndiffer from the YAML fields of Config\n  %v", keys, leaves)
	}
	if len(layerValues) != len(keys) {
		t.Errorf("layerValues has %d rows for %d settings", len(layerValues), len(keys))
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := load(t, "", env{})
	if err != nil {
		t.Fatalf("Load with nothing set: %v", err)
	}
	if !reflect.DeepEqual(cfg, config.Default()) {
		t.Errorf("Load with nothing set =\n  %+v\nwant the defaults\n  %+v", cfg, config.Default())
	}
	d := config.Default()
	if err := d.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
	if d.Listen != ":8080" || d.Rooms.MaxParticipants != 8 || d.Rooms.EmptyTTL != time.Hour || d.Rooms.DefaultMode != config.ModeP2P {
		t.Errorf("defaults differ from DESIGN.md: %+v", d)
	}
	// The 15 s promise for a vanished peer rests on these.
	if d.Signaling.PeerTimeout >= 15*time.Second {
		t.Errorf("peer timeout %v does not report a vanished peer within 15 s", d.Signaling.PeerTimeout)
	}
}

// TestLayering sets every setting in every combination of layers and checks
// that each one comes from the highest layer that sets it.
func TestLayering(t *testing.T) {
	def := config.Default()
	layerNames := [3]string{"yaml", "env", "flags"}
	for mask := range 8 {
		var present []string
		for i, n := range layerNames {
			if mask&(1<<i) != 0 {
				present = append(present, n)
			}
		}
		name := strings.Join(present, "+")
		if name == "" {
			name = "defaults"
		}
		t.Run(name, func(t *testing.T) {
			var yamlText string
			e := env{}
			var args []string
			if mask&1 != 0 {
				yamlText = layerYAML(0)
			}
			for _, s := range config.SettingsForTest() {
				if mask&2 != 0 {
					e[s.Env] = layerValues[s.Key][1]
				}
				if mask&4 != 0 {
					args = append(args, "--"+s.Flag+"="+layerValues[s.Key][2])
				}
			}
			cfg, err := load(t, yamlText, e, args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			for _, s := range config.SettingsForTest() {
				want := config.ValueForTest(&def, s.Key)
				for i := 2; i >= 0; i-- {
					if mask&(1<<i) != 0 {
						want = layerValues[s.Key][i]
						break
					}
				}
				if got := config.ValueForTest(&cfg, s.Key); got != want {
					t.Errorf("%s = %q, want %q", s.Key, got, want)
				}
			}
		})
	}
}

func TestLoadSources(t *testing.T) {
	fileA := writeYAML(t, "listen: 127.0.0.1:7001\n")
	fileB := writeYAML(t, "listen: 127.0.0.1:7002\n")
	for _, tc := range []struct {
		name  string
		yaml  string
		env   env
		args  []string
		check func(config.Config) bool
	}{
		{"PARLEY_CONFIG names the file", "", env{"PARLEY_CONFIG": fileA}, nil,
			func(c config.Config) bool { return c.Listen == "127.0.0.1:7001" }},
		{"--config wins over PARLEY_CONFIG", "", env{"PARLEY_CONFIG": fileA}, []string{"--config", fileB},
			func(c config.Config) bool { return c.Listen == "127.0.0.1:7002" }},
		{"an empty variable is not set", "listen: 127.0.0.1:7003\n", env{"PARLEY_LISTEN": ""}, nil,
			func(c config.Config) bool { return c.Listen == "127.0.0.1:7003" }},
		{"plain YAML scalars", "listen: 127.0.0.1:9000\nrooms:\n  max_participants: 12\n  empty_ttl: 90s\nsignaling:\n  message_rate: 2.5\nturn:\n  enabled: false\n  relay_ports: 50000-50100\n", nil, nil,
			func(c config.Config) bool {
				return c.Listen == "127.0.0.1:9000" && c.Rooms.MaxParticipants == 12 && c.Rooms.EmptyTTL == 90*time.Second &&
					c.Signaling.MessageRate == 2.5 && !c.TURN.Enabled && c.TURN.RelayPorts == config.PortRange{Min: 50000, Max: 50100}
			}},
		{"YAML list as block sequence", "signaling:\n  allowed_origins:\n    - https://a.example\n    - https://b.example\n", nil, nil,
			func(c config.Config) bool {
				return slices.Equal(c.Signaling.AllowedOrigins, []string{"https://a.example", "https://b.example"})
			}},
		{"YAML list as comma-separated string", "signaling:\n  allowed_origins: https://a.example, https://b.example\n", nil, nil,
			func(c config.Config) bool {
				return slices.Equal(c.Signaling.AllowedOrigins, []string{"https://a.example", "https://b.example"})
			}},
		{"a flag list replaces the file's", "signaling:\n  allowed_origins: [https://a.example, https://b.example]\n", nil, []string{"--allowed-origins", "https://c.example"},
			func(c config.Config) bool {
				return slices.Equal(c.Signaling.AllowedOrigins, []string{"https://c.example"})
			}},
		{"an env list replaces the file's", "turn:\n  allow_peers: [10.0.0.0/8]\n", env{"PARLEY_TURN_ALLOW_PEERS": " 192.168.0.0/16 , ,fd00::/8"}, nil,
			func(c config.Config) bool {
				return slices.Equal(c.TURN.AllowPeers, []string{"192.168.0.0/16", "fd00::/8"})
			}},
		{"bare bool flag", "turn:\n  enabled: false\n", nil, []string{"-turn"},
			func(c config.Config) bool { return c.TURN.Enabled }},
		{"single port range", "", env{"PARLEY_TURN_RELAY_PORTS": "50000"}, nil,
			func(c config.Config) bool { return c.TURN.RelayPorts == config.PortRange{Min: 50000, Max: 50000} }},
		{"empty file", "\n", nil, nil,
			func(c config.Config) bool { return reflect.DeepEqual(c, config.Default()) }},
		{"only comments", "# nothing here\n", nil, nil,
			func(c config.Config) bool { return reflect.DeepEqual(c, config.Default()) }},
		{"empty section and value keep the defaults", "rooms:\nlisten:\nturn:\n  secret: ~\n", nil, nil,
			func(c config.Config) bool { return reflect.DeepEqual(c, config.Default()) }},
		{"YAML anchors", "turn:\n  user_quota: &q 20\n  total_quota: *q\n", nil, nil,
			func(c config.Config) bool { return c.TURN.UserQuota == 20 && c.TURN.TotalQuota == 20 }},
		{"a certificate needs turn.tls_listen only with TURN", "tls: {cert: c.pem, key: k.pem}\nturn: {enabled: false, tls_listen: nonsense}\n", nil, nil,
			func(c config.Config) bool { return c.TLS.Enabled() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(t, tc.yaml, tc.env, tc.args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !tc.check(cfg) {
				t.Errorf("Load gave %+v", cfg)
			}
		})
	}
}

// TestListenDefaultWithACME: with ACME on, HTTPS moves to :443 unless some
// layer chose the listen address, even one that equals the old default.
func TestListenDefaultWithACME(t *testing.T) {
	const acme = "--acme-domain=parley.example.org"
	for _, tc := range []struct {
		name string
		yaml string
		env  env
		args []string
		want string
	}{
		{name: "no ACME keeps the default", want: ":8080"},
		{name: "no ACME, self-signed keeps the default", args: []string{"--tls-self-signed"}, want: ":8080"},
		{name: "ACME flag", args: []string{acme}, want: ":443"},
		{name: "ACME in YAML", yaml: "tls:\n  acme_domains: [parley.example.org]\n", want: ":443"},
		{name: "ACME in env", env: env{"PARLEY_ACME_DOMAIN": "parley.example.org"}, want: ":443"},
		{name: "explicit --listen wins", args: []string{acme, "--listen", "127.0.0.1:8443"}, want: "127.0.0.1:8443"},
		{name: "explicit --listen of the default wins", args: []string{"--listen=:8080", acme}, want: ":8080"},
		{name: "YAML listen wins", yaml: "listen: \":8443\"\n", args: []string{acme}, want: ":8443"},
		{name: "YAML listen of the default wins", yaml: "listen: \":8080\"\ntls:\n  acme_domains: [parley.example.org]\n", want: ":8080"},
		{name: "empty YAML listen is not set", yaml: "listen:\n", args: []string{acme}, want: ":443"},
		{name: "PARLEY_LISTEN wins", env: env{"PARLEY_LISTEN": ":9443"}, args: []string{acme}, want: ":9443"},
		{name: "empty PARLEY_LISTEN is not set", env: env{"PARLEY_LISTEN": ""}, args: []string{acme}, want: ":443"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(t, tc.yaml, tc.env, tc.args...)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if cfg.Listen != tc.want {
				t.Errorf("listen = %q, want %q", cfg.Listen, tc.want)
			}
		})
	}
}

// namesKey reports whether msg names key as a whole dotted name followed by a
// colon ("listen:" but not as part of "turn.listen:").
func namesKey(msg, key string) bool {
	return regexp.MustCompile(`(^|[\s(:])` + regexp.QuoteMeta(key) + `[:)]`).MatchString(msg)
}

func TestUnknownYAMLKey(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"bogus: 1\n", "bogus"},
		{"listen: :8080\nListen: :9090\n", "Listen"},
		{"rooms:\n  max_participant: 3\n", "rooms.max_participant"},
		{"rooms:\n  max_participants: 3\n  colour: blue\n", "rooms.colour"},
		{"turn:\n  relay:\n    ports: 1\n", "turn.relay"},
		{"tls.cert: a.pem\n", "tls.cert"},
		{"sfu:\n  udp_port: 1\n  sfu:\n    udp_port: 2\n", "sfu.sfu"},
	} {
		t.Run(tc.key, func(t *testing.T) {
			_, err := load(t, tc.yaml, env{})
			if err == nil {
				t.Fatalf("Load accepted unknown key %s", tc.key)
			}
			if !strings.Contains(err.Error(), "unknown key "+tc.key) {
				t.Errorf("error %q does not name the unknown key %s", err, tc.key)
			}
			if !strings.Contains(err.Error(), "parley.yaml") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestBadYAMLFile(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"not YAML", "listen: [\n", "parley.yaml"},
		{"a list at the top", "- listen\n", "the file must be a mapping"},
		{"a section that is a value", "rooms: 5\n", "rooms must be a mapping"},
		{"a value that is a section", "listen:\n  port: 80\n", "listen: must be a single value"},
		{"a list for a single value", "log:\n  level: [debug]\n", "log.level: must be a single value"},
		{"a list of lists", "turn:\n  allow_peers: [[10.0.0.0/8]]\n", "turn.allow_peers: must be a list of strings"},
		{"a key set twice", "listen: :1\nlisten: :2\n", "listen is already set at line 1"},
		{"a section set twice", "rooms:\n  max_participants: 3\nrooms:\n  empty_ttl: 1m\n", "rooms is already set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.yaml, env{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Load = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := config.Load([]string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, env{}.get, io.Discard); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing config file: %v, want an error naming it", err)
	}
}

// badValues are YAML files with one bad value each, and the key the error
// must name.
var badValues = []struct{ name, yaml, key string }{
	{"listen not host:port", "listen: localhost\n", "listen"},
	{"listen port out of range", "listen: \":99999\"\n", "listen"},
	{"listen named port", "listen: \"localhost:http\"\n", "listen"},
	{"public_ip not an IP", "public_ip: parley.example\n", "public_ip"},
	{"public_ip unspecified", "public_ip: 0.0.0.0\n", "public_ip"},
	{"public_ip multicast", "public_ip: 224.0.0.1\n", "public_ip"},
	{"cert without key", "tls:\n  cert: cert.pem\n", "tls.key"},
	{"key without cert", "tls:\n  key: key.pem\n", "tls.cert"},
	{"mode unknown", "rooms:\n  default_mode: mesh\n", "rooms.default_mode"},
	{"mode empty", "rooms:\n  default_mode: \"\"\n", "rooms.default_mode"},
	{"max participants 1", "rooms:\n  max_participants: 1\n", "rooms.max_participants"},
	{"max participants 1001", "rooms:\n  max_participants: 1001\n", "rooms.max_participants"},
	{"max participants negative", "rooms:\n  max_participants: -5\n", "rooms.max_participants"},
	{"max participants not a number", "rooms:\n  max_participants: eight\n", "rooms.max_participants"},
	{"max participants fractional", "rooms:\n  max_participants: 2.5\n", "rooms.max_participants"},
	{"empty_ttl not a duration", "rooms:\n  empty_ttl: soon\n", "rooms.empty_ttl"},
	{"empty_ttl without unit", "rooms:\n  empty_ttl: 3600\n", "rooms.empty_ttl"},
	{"empty_ttl zero", "rooms:\n  empty_ttl: 0s\n", "rooms.empty_ttl"},
	{"empty_ttl negative", "rooms:\n  empty_ttl: -1h\n", "rooms.empty_ttl"},
	{"origin without scheme", "signaling:\n  allowed_origins: [app.example.com]\n", "signaling.allowed_origins"},
	{"origin with other scheme", "signaling:\n  allowed_origins: [\"ftp://app.example.com\"]\n", "signaling.allowed_origins"},
	{"origin with a path", "signaling:\n  allowed_origins: [\"https://app.example.com/call\"]\n", "signaling.allowed_origins"},
	{"origin without host", "signaling:\n  allowed_origins: [\"https://\"]\n", "signaling.allowed_origins"},
	{"origin unparsable", "signaling:\n  allowed_origins: [\"https://%zz\"]\n", "signaling.allowed_origins"},
	{"message_rate zero", "signaling:\n  message_rate: 0\n", "signaling.message_rate"},
	{"message_rate not a number", "signaling:\n  message_rate: fast\n", "signaling.message_rate"},
	{"message_burst zero", "signaling:\n  message_burst: 0\n", "signaling.message_burst"},
	{"ping_interval zero", "signaling:\n  ping_interval: 0s\n", "signaling.ping_interval"},
	{"ping_interval not a duration", "signaling:\n  ping_interval: often\n", "signaling.ping_interval"},
	{"peer_timeout not above ping_interval", "signaling:\n  ping_interval: 10s\n  peer_timeout: 10s\n", "signaling.peer_timeout"},
	{"peer_timeout negative", "signaling:\n  peer_timeout: -12s\n", "signaling.peer_timeout"},
	{"turn enabled not a bool", "turn:\n  enabled: maybe\n", "turn.enabled"},
	{"turn listen bad", "turn:\n  listen: \"3478\"\n", "turn.listen"},
	{"turn tls_listen bad with a certificate", "tls: {cert: c.pem, key: k.pem}\nturn:\n  tls_listen: nowhere\n", "turn.tls_listen"},
	{"credential_ttl under a minute", "turn:\n  credential_ttl: 30s\n", "turn.credential_ttl"},
	{"credential_ttl not a duration", "turn:\n  credential_ttl: a day\n", "turn.credential_ttl"},
	{"relay ports reversed", "turn:\n  relay_ports: 60000-50000\n", "turn.relay_ports"},
	{"relay ports not numbers", "turn:\n  relay_ports: low-high\n", "turn.relay_ports"},
	{"relay ports over 65535", "turn:\n  relay_ports: 50000-70000\n", "turn.relay_ports"},
	{"relay ports zero", "turn:\n  relay_ports: 0-100\n", "turn.relay_ports"},
	{"relay ports privileged", "turn:\n  relay_ports: 80-90\n", "turn.relay_ports"},
	{"relay ports empty", "turn:\n  relay_ports: \"\"\n", "turn.relay_ports"},
	{"allow_peers not a CIDR", "turn:\n  allow_peers: [192.168.1.1]\n", "turn.allow_peers"},
	{"allow_peers bad prefix", "turn:\n  allow_peers: [10.0.0.0/33]\n", "turn.allow_peers"},
	{"allow_peers words", "turn:\n  allow_peers: [lan]\n", "turn.allow_peers"},
	{"user_quota zero", "turn:\n  user_quota: 0\n", "turn.user_quota"},
	{"total_quota under user_quota", "turn:\n  user_quota: 10\n  total_quota: 5\n", "turn.total_quota"},
	{"external url scheme", "turn:\n  external_urls: [\"https://turn.example\"]\n  external_secret: s\n", "turn.external_urls"},
	{"external urls without secret", "turn:\n  external_urls: [\"turn:turn.example\"]\n", "turn.external_secret"},
	{"sfu udp port out of range", "sfu:\n  udp_port: 70000\n", "sfu.udp_port"},
	{"sfu tcp port negative", "sfu:\n  tcp_port: -1\n", "sfu.tcp_port"},
	{"log format", "log:\n  format: xml\n", "log.format"},
	{"log level", "log:\n  level: verbose\n", "log.level"},
}

func TestBadValues(t *testing.T) {
	for _, tc := range badValues {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := load(t, tc.yaml, env{})
			if err == nil {
				t.Fatalf("Load accepted %q", tc.yaml)
			}
			if !namesKey(err.Error(), tc.key) {
				t.Errorf("error %q does not name %s", err, tc.key)
			}
			if !reflect.DeepEqual(cfg, config.Config{}) {
				t.Errorf("Load returned a config with its error")
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := config.Default()
	c.Listen = "nowhere"
	c.Rooms.MaxParticipants = 0
	c.Log.Format = "xml"
	c.TURN.RelayPorts = config.PortRange{Min: 2000, Max: 1000}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted four bad values")
	}
	for _, key := range []string{"listen", "rooms.max_participants", "log.format", "turn.relay_ports"} {
		if !namesKey(err.Error(), key) {
			t.Errorf("error %q does not name %s", err, key)
		}
	}
}

func TestBadEnv(t *testing.T) {
	for _, tc := range []struct{ name, value, key string }{
		{"PARLEY_ROOM_EMPTY_TTL", "soon", "rooms.empty_ttl"},
		{"PARLEY_PING_INTERVAL", "5", "signaling.ping_interval"},
		{"PARLEY_MAX_PARTICIPANTS", "eight", "rooms.max_participants"},
		{"PARLEY_MESSAGE_RATE", "fast", "signaling.message_rate"},
		{"PARLEY_TURN", "yes please", "turn.enabled"},
		{"PARLEY_TURN_RELAY_PORTS", "9-3", "turn.relay_ports"},
		{"PARLEY_SFU_UDP_PORT", "port", "sfu.udp_port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, "", env{tc.name: tc.value})
			if err == nil {
				t.Fatalf("Load accepted %s=%q", tc.name, tc.value)
			}
			if !strings.Contains(err.Error(), tc.name) || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), strconv.Quote(tc.value)) {
				t.Errorf("error %q does not name %s, its key %s and the value", err, tc.name, tc.key)
			}
		})
	}
	// A value that parses but is out of range is refused by Validate, which
	// names the YAML key.
	if _, err := load(t, "", env{"PARLEY_MAX_PARTICIPANTS": "1"}); err == nil || !namesKey(err.Error(), "rooms.max_participants") {
		t.Errorf("PARLEY_MAX_PARTICIPANTS=1: %v, want an error naming rooms.max_participants", err)
	}
}

func TestBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--room-empty-ttl", "soon"}, "room-empty-ttl"},
		{[]string{"--max-participants=eight"}, "max-participants"},
		{[]string{"--turn=maybe"}, "turn"},
		{[]string{"--turn-relay-ports", "1-2-3"}, "turn-relay-ports"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--listen"}, "listen"},
		{[]string{"--max-participants", "1"}, "rooms.max_participants"},
		{[]string{"--log-format", "xml"}, "log.format"},
	} {
		var out bytes.Buffer
		_, err := config.Load(tc.args, env{}.get, &out)
		if err == nil {
			t.Errorf("Load(%q) accepted", tc.args)
			continue
		}
		if errors.Is(err, config.ErrHelp) {
			t.Errorf("Load(%q) = ErrHelp", tc.args)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q) = %q, want it to name %s", tc.args, err, tc.want)
		}
	}
}

func TestPositionalArgument(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"--listen", ":1", "extra"}, {"--", "--listen"}} {
		_, err := config.Load(args, env{}.get, io.Discard)
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(args[len(args)-1])) {
			t.Errorf("Load(%q) = %v, want an error naming the argument", args, err)
		}
	}
}

func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h", "-help"} {
		var out bytes.Buffer
		_, err := config.Load([]string{"--listen", ":1", arg}, env{}.get, &out)
		if !errors.Is(err, config.ErrHelp) {
			t.Fatalf("Load(%s) = %v, want ErrHelp", arg, err)
		}
		usage := out.String()
		if !strings.Contains(usage, "Usage: parley") || !strings.Contains(usage, "PARLEY_CONFIG") || !strings.Contains(usage, "-config") {
			t.Errorf("usage lacks its heading or --config:\n%s", usage)
		}
		// Each flag's entry names its YAML key and environment variable.
		entries := regexp.MustCompile(`(?m)^  -`).Split(usage, -1)
		for _, s := range config.SettingsForTest() {
			found := false
			for _, e := range entries {
				if strings.HasPrefix(e, s.Flag+" ") || strings.HasPrefix(e, s.Flag+"\n") {
					found = true
					if !strings.Contains(e, "YAML "+s.Key+",") || !strings.Contains(e, "env "+s.Env+")") {
						t.Errorf("usage of -%s does not name YAML %s and env %s:\n  -%s", s.Flag, s.Key, s.Env, e)
					}
				}
			}
			if !found {
				t.Errorf("usage does not list -%s", s.Flag)
			}
		}
		// Defaults are shown, so --help tells what runs without flags.
		if !strings.Contains(usage, "(default :8080)") || !strings.Contains(usage, "(default 1h0m0s)") {
			t.Errorf("usage does not show defaults:\n%s", usage)
		}
	}
}

func TestPortRange(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want config.PortRange
		ok   bool
	}{
		{"49152-65535", config.PortRange{Min: 49152, Max: 65535}, true},
		{" 5000 - 5001 ", config.PortRange{Min: 5000, Max: 5001}, true},
		{"5000", config.PortRange{Min: 5000, Max: 5000}, true},
		{"1-1", config.PortRange{Min: 1, Max: 1}, true},
		{"", config.PortRange{}, false},
		{"-", config.PortRange{}, false},
		{"5000-", config.PortRange{}, false},
		{"0-10", config.PortRange{}, false},
		{"10-5", config.PortRange{}, false},
		{"1-65536", config.PortRange{}, false},
		{"a-b", config.PortRange{}, false},
	} {
		var r config.PortRange
		err := r.UnmarshalText([]byte(tc.in))
		if (err == nil) != tc.ok || (tc.ok && r != tc.want) {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v, ok %v", tc.in, r, err, tc.want, tc.ok)
		}
		if tc.ok {
			b, _ := r.MarshalText()
			var back config.PortRange
			if err := back.UnmarshalText(b); err != nil || back != r {
				t.Errorf("%v does not round-trip through %q", r, b)
			}
		}
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"listen":           "PARLEY_LISTEN",
		"max-participants": "PARLEY_MAX_PARTICIPANTS",
		"turn-relay-ports": "PARLEY_TURN_RELAY_PORTS",
	} {
		if got := config.EnvName(flag); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, want)
		}
	}
}
