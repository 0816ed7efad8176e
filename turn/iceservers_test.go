package turn

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/parley-chat/parley/config"
)

func TestBuiltinICEServers(t *testing.T) {
	tests := []struct {
		name string
		e    Endpoint
		want []ICEServer
	}{
		{"ipv4 without TLS", Endpoint{Host: "198.51.100.7", Port: 3478}, []ICEServer{
			{URLs: []string{"stun:198.51.100.7:3478"}},
			{URLs: []string{"turn:198.51.100.7:3478?transport=udp", "turn:198.51.100.7:3478?transport=tcp"}, Username: "u", Credential: "p"},
		}},
		{"ipv4 with TLS", Endpoint{Host: "198.51.100.7", Port: 3478, TLSPort: 5349}, []ICEServer{
			{URLs: []string{"stun:198.51.100.7:3478"}},
			{URLs: []string{
				"turn:198.51.100.7:3478?transport=udp", "turn:198.51.100.7:3478?transport=tcp",
				"turns:198.51.100.7:5349?transport=tcp",
			}, Username: "u", Credential: "p"},
		}},
		{"ipv6 with TLS host", Endpoint{Host: "2001:db8::7", Port: 3478, TLSHost: "chat.example.org", TLSPort: 443}, []ICEServer{
			{URLs: []string{"stun:[2001:db8::7]:3478"}},
			{URLs: []string{
				"turn:[2001:db8::7]:3478?transport=udp", "turn:[2001:db8::7]:3478?transport=tcp",
				"turns:chat.example.org:443?transport=tcp",
			}, Username: "u", Credential: "p"},
		}},
		{"TLS on its port and on the HTTPS port", Endpoint{Host: "198.51.100.7", Port: 3478, TLSHost: "chat.example.org", TLSPort: 5349, SharedTLSPort: 443}, []ICEServer{
			{URLs: []string{"stun:198.51.100.7:3478"}},
			{URLs: []string{
				"turn:198.51.100.7:3478?transport=udp", "turn:198.51.100.7:3478?transport=tcp",
				"turns:chat.example.org:5349?transport=tcp", "turns:chat.example.org:443?transport=tcp",
			}, Username: "u", Credential: "p"},
		}},
		{"TLS on the HTTPS port only", Endpoint{Host: "198.51.100.7", Port: 3478, SharedTLSPort: 8443}, []ICEServer{
			{URLs: []string{"stun:198.51.100.7:3478"}},
			{URLs: []string{
				"turn:198.51.100.7:3478?transport=udp", "turn:198.51.100.7:3478?transport=tcp",
				"turns:198.51.100.7:8443?transport=tcp",
			}, Username: "u", Credential: "p"},
		}},
		{"ipv6 TLS on the address", Endpoint{Host: "2001:db8::7", Port: 3478, TLSPort: 5349}, []ICEServer{
			{URLs: []string{"stun:[2001:db8::7]:3478"}},
			{URLs: []string{
				"turn:[2001:db8::7]:3478?transport=udp", "turn:[2001:db8::7]:3478?transport=tcp",
				"turns:[2001:db8::7]:5349?transport=tcp",
			}, Username: "u", Credential: "p"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := BuiltinICEServers(tt.e, "u", "p"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestICEServerJSON(t *testing.T) {
	b, err := json.Marshal(BuiltinICEServers(Endpoint{Host: "198.51.100.7", Port: 3478}, "1:a", "pw"))
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"urls":["stun:198.51.100.7:3478"]},` +
		`{"urls":["turn:198.51.100.7:3478?transport=udp","turn:198.51.100.7:3478?transport=tcp"],"username":"1:a","credential":"pw"}]`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
}

func TestProvider(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	cfg := config.Default().TURN
	cfg.CredentialTTL = time.Hour
	external := []string{"turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:5349?transport=tcp"}

	t.Run("external only", func(t *testing.T) {
		c := cfg
		c.ExternalURLs, c.ExternalSecret = external, "coturn-secret"
		p := NewProvider(c, nil, "")
		p.now = func() time.Time { return now }
		got := p.ICEServers("alice")
		u, pw := Credentials("coturn-secret", "alice", time.Hour, now)
		want := []ICEServer{{URLs: external, Username: u, Credential: pw}}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
	})

	t.Run("nothing", func(t *testing.T) {
		if got := NewProvider(cfg, nil, "").ICEServers("alice"); len(got) != 0 {
			t.Errorf("got %+v", got)
		}
	})

	t.Run("built-in and external", func(t *testing.T) {
		ts := startServer(t, true, func(c *config.TURN, o *Options) {
			c.CredentialTTL = time.Hour
			c.ExternalURLs, c.ExternalSecret = external, "coturn-secret"
			o.Now = func() time.Time { return now }
		})
		p := NewProvider(ts.cfg, ts.Server, "chat.example.org")
		got := p.ICEServers("bob")
		if len(got) != 3 {
			t.Fatalf("got %+v", got)
		}
		e := ts.Endpoint()
		if e.Host != "127.0.0.1" || e.Port == 0 || e.TLSPort == 0 {
			t.Fatalf("Endpoint() = %+v", e)
		}
		e.TLSHost = "chat.example.org"
		u, pw := Credentials(testSecret, "bob", time.Hour, now)
		want := append(BuiltinICEServers(e, u, pw), ExternalICEServers(external, "", "")...)
		want[2].Username, want[2].Credential = Credentials("coturn-secret", "bob", time.Hour, now)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("got  %+v\nwant %+v", got, want)
		}
		// The built-in credentials work against the server (its clock is
		// the provider's, frozen at now; the credentials expire in an hour).
		allocate(t, ts.client(t, "udp", u, pw, nil))
	})
}

func TestCertificateHost(t *testing.T) {
	cert, _ := selfSignedCert(t)
	if got := CertificateHost(cert); got != "localhost" {
		t.Errorf("CertificateHost = %q, want localhost", got)
	}
	cert.Leaf = nil // parsed from the DER
	if got := CertificateHost(cert); got != "localhost" {
		t.Errorf("CertificateHost without Leaf = %q, want localhost", got)
	}
	if got := CertificateHost(tls.Certificate{}); got != "" {
		t.Errorf("CertificateHost of nothing = %q", got)
	}
	cert.Leaf = &x509.Certificate{DNSNames: []string{"*.example.org", "example.org"}}
	if got := CertificateHost(cert); got != "example.org" {
		t.Errorf("CertificateHost with a wildcard = %q, want example.org", got)
	}
}
