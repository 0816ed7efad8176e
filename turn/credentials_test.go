package turn

import (
	"strconv"
	"strings"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"
)

func TestCredentials(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	u, p := Credentials("s3cret", "alice", 12*time.Hour, now)
	if want := "1700043200:alice"; u != want {
		t.Errorf("username %q, want %q", u, want)
	}
	// Known answer: printf '1700043200:alice' | openssl dgst -sha1 -hmac s3cret -binary | base64
	if want := "QwoaCWsbGyBTwZodZx/QxKnSykI="; p != want {
		t.Errorf("password %q, want %q", p, want)
	}

	// pion's generator, an independent implementation, agrees.
	pu, pp, err := pionturn.GenerateLongTermTURNRESTCredentials("s3cret", "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	expiry, id, ok := parseUsername(pu)
	if !ok || id != "bob" {
		t.Fatalf("parseUsername(%q) = %d, %q, %v", pu, expiry, id, ok)
	}
	if _, got := Credentials("s3cret", "bob", 0, time.Unix(expiry, 0)); got != pp {
		t.Errorf("password %q, pion's %q", got, pp)
	}
}

func TestParseUsername(t *testing.T) {
	tests := []struct {
		in     string
		expiry int64
		id     string
		ok     bool
	}{
		{"1700000000:alice", 1700000000, "alice", true},
		{"0:x", 0, "x", true},
		{"1700000000:a:b", 1700000000, "a:b", true}, // the id is everything after the first colon
		{"9223372036854775807:x", 9223372036854775807, "x", true},
		{"", 0, "", false},
		{"alice", 0, "", false},
		{"1700000000", 0, "", false},
		{"1700000000:", 0, "", false},
		{":alice", 0, "", false},
		{"-1:alice", 0, "", false},
		{"+1:alice", 0, "", false},
		{" 1:alice", 0, "", false},
		{"1e9:alice", 0, "", false},
		{"0x10:alice", 0, "", false},
		{"9223372036854775808:x", 0, "", false},  // overflows int64
		{"99999999999999999999:x", 0, "", false}, // too long
		{"1:" + strings.Repeat("a", maxParticipantIDLen), 1, strings.Repeat("a", maxParticipantIDLen), true},
		{"1:" + strings.Repeat("a", maxParticipantIDLen+1), 0, "", false},
	}
	for _, tt := range tests {
		expiry, id, ok := parseUsername(tt.in)
		if expiry != tt.expiry || id != tt.id || ok != tt.ok {
			t.Errorf("parseUsername(%q) = %d, %q, %v; want %d, %q, %v", tt.in, expiry, id, ok, tt.expiry, tt.id, tt.ok)
		}
	}
}

func TestRestAuth(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	a := &restAuth{secret: "s", now: func() time.Time { return now }}
	u, p := Credentials("s", "alice", time.Minute, now)
	id, key, refusal := a.key(u, "parley")
	if refusal != "" || id != "alice" {
		t.Fatalf("key(%q) = %q, %q", u, id, refusal)
	}
	if want := pionturn.GenerateAuthKey(u, "parley", p); string(key) != string(want) {
		t.Errorf("key differs from pion's GenerateAuthKey")
	}
	// Valid up to and including the expiry second.
	u, _ = Credentials("s", "alice", 0, now)
	if _, _, refusal := a.key(u, "parley"); refusal != "" {
		t.Errorf("credential expiring now refused: %s", refusal)
	}
	u, _ = Credentials("s", "alice", -time.Second, now)
	if _, _, refusal := a.key(u, "parley"); refusal != refusedExpired {
		t.Errorf("expired credential: %q", refusal)
	}
	if _, _, refusal := a.key("alice", "parley"); refusal != refusedMalformed {
		t.Errorf("malformed credential: %q", refusal)
	}
}

func TestRandomSecret(t *testing.T) {
	a, b := randomSecret(), randomSecret()
	if len(a) < 20 || a == b {
		t.Errorf("random secrets %q and %q", a, b)
	}
}

// FuzzParseUsername: the parser of the USERNAME a client sends never panics,
// and what it accepts has the documented shape and round-trips.
func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{"1700000000:alice", ":", "1:", ":x", "-1:x", "99999999999999999999:x", "1:a:b", "\x00:\xff"} {
		f.Add(s)
	}
	a := &restAuth{secret: "s", now: func() time.Time { return time.Unix(1_700_000_000, 0) }}
	f.Fuzz(func(t *testing.T, s string) {
		expiry, id, ok := parseUsername(s)
		_, _, refusal := a.key(s, "parley")
		if !ok {
			if refusal != refusedMalformed {
				t.Fatalf("parseUsername refused %q but key said %q", s, refusal)
			}
			return
		}
		if expiry < 0 || id == "" || len(id) > maxParticipantIDLen {
			t.Fatalf("parseUsername(%q) = %d, %q", s, expiry, id)
		}
		ts, rest, _ := strings.Cut(s, ":")
		if rest != id {
			t.Fatalf("id %q is not everything after the first colon of %q", id, s)
		}
		if n, err := strconv.ParseInt(ts, 10, 64); err != nil || n != expiry {
			t.Fatalf("expiry %d from %q", expiry, ts)
		}
		if refusal == refusedMalformed {
			t.Fatalf("key refused a well-formed %q", s)
		}
	})
}
