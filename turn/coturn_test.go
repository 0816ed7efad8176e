package turn

import (
	"context"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/parley-chat/parley/config"
)

// coturnTool returns the path of one of coturn's client tools. Missing, it
// fails the test in CI (CI=true) and skips it elsewhere.
func coturnTool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (install the Debian package coturn): %v", name, err)
	}
	t.Skipf("%s not found (install the Debian package coturn); skipping the interop test", name)
	return ""
}

// runTool runs a tool with a timeout and returns its combined output.
func runTool(t *testing.T, timeout time.Duration, path string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	t.Logf("%s %v:\n%s", path, args, out)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return string(out)
}

var (
	lostRE = regexp.MustCompile(`Total lost packets (\d+) \(`)
	sentRE = regexp.MustCompile(`tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
)

// TestCoturnUclient: coturn's TURN load client, with REST credentials from
// the shared secret, relays messages between its own clients through Parley
// (client to client, -y) and loses none. Over UDP and TCP, with and without
// channels, with RTCP allocations (EVEN-PORT and RESERVATION-TOKEN).
func TestCoturnUclient(t *testing.T) {
	uclient := coturnTool(t, "turnutils_uclient")
	// -y relays between the tool's own allocations: the peers are this
	// server's relay addresses on 127.0.0.1. The server would reach them
	// without an allow-list (its own address, a relay port; see
	// TestOwnRelayAddress); the test runs as an operator would configure
	// a loopback install, with --turn-allow-peers 127.0.0.1/32.
	// Four UDP sockets whatever the CPU count: the RTCP allocations redeem
	// RESERVATION-TOKENs, which must work across the sockets.
	ts := startServerSockets(t, 4, false, func(cfg *config.TURN, _ *Options) {
		cfg.AllowPeers = []string{"127.0.0.1/32"}
		cfg.UserQuota = 100
	})
	_, port, _ := net.SplitHostPort(ts.udpAddr)
	const messages, clients = 100, 5
	tests := []struct {
		name  string
		flags []string
	}{
		{"udp channels", nil},
		{"udp send indications", []string{"-s"}},
		{"tcp channels", []string{"-t"}},
		{"udp without rtcp", []string{"-c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			before := ts.Stats()
			args := append([]string{
				"-W", testSecret, "-u", "coturn-uclient", "-y",
				"-n", strconv.Itoa(messages), "-l", "1000", "-m", strconv.Itoa(clients), "-z", "5",
				"-p", port,
			}, tt.flags...)
			out := runTool(t, 60*time.Second, uclient, append(args, "127.0.0.1")...)

			m := lostRE.FindAllStringSubmatch(out, -1)
			if len(m) == 0 {
				t.Fatal("no \"Total lost packets\" line in the output")
			}
			if lost := m[len(m)-1][1]; lost != "0" {
				t.Errorf("lost %s packets", lost)
			}
			s := sentRE.FindAllStringSubmatch(out, -1)
			if len(s) == 0 {
				t.Fatal("no tot_send_msgs line in the output")
			}
			sent, _ := strconv.Atoi(s[len(s)-1][1])
			recv, _ := strconv.Atoi(s[len(s)-1][2])
			if sent < messages*clients || recv != sent {
				t.Errorf("sent %d, received %d messages; want at least %d, all received", sent, recv, messages*clients)
			}
			after := ts.Stats()
			if after.AllocationsTotal-before.AllocationsTotal < clients || after.PacketsToPeers-before.PacketsToPeers < uint64(sent) {
				t.Errorf("server accounting: before %+v, after %+v", before, after)
			}
		})
	}
}

// TestCoturnStunclient: coturn's STUN client gets its own address back.
func TestCoturnStunclient(t *testing.T) {
	stunclient := coturnTool(t, "turnutils_stunclient")
	ts := startServer(t, false, nil)
	_, port, _ := net.SplitHostPort(ts.udpAddr)
	out := runTool(t, 30*time.Second, stunclient, "-p", port, "-L", "127.0.0.1", "127.0.0.1")
	m := regexp.MustCompile(`UDP reflexive addr: (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatal("no reflexive address in the output")
	}
	host, _, err := net.SplitHostPort(m[1])
	if err != nil || host != "127.0.0.1" {
		t.Errorf("reflexive address %q, want 127.0.0.1:port", m[1])
	}
}
