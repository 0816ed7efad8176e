package turn

// This file holds BenchmarkRelayVsCoturn, Parley's TURN relay against
// coturn. Run it with:
//
//	go test -run '^$' -bench RelayVsCoturn -benchtime 1x ./turn/

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v4"

	"github.com/parley-chat/parley/config"
)

const (
	relayBenchSecret  = "relay-bench-secret"
	relayBenchClients = 50
	relayBenchMsgSize = 1000
	// Relay port ranges, one per server, so that neither takes the other's.
	coturnRelayPorts = "40000-40999"
	parleyRelayPorts = "41000-41999"
	// Environment of the Parley server process (runRelayBenchServer).
	relayBenchServerEnv  = "PARLEY_RELAYBENCH_SERVER"
	relayBenchProfileEnv = "PARLEY_RELAYBENCH_CPUPROFILE"
	relayBenchReady      = "relay-bench-ready"
)

// relayBenchScenarios are the loads, each run against both servers.
var relayBenchScenarios = []struct {
	name     string
	interval int // ms between one client's messages; 0 sends as fast as the client can
	messages int // per client
}{
	{"paced", 20, 1000}, // 50 clients × 50 msg/s for 20 s: 50,000 messages
	{"flood", 0, 10000}, // 500,000 messages
}

// BenchmarkRelayVsCoturn compares Parley's TURN relay with coturn on this
// machine, in one run, under the same load from coturn's own load client. It
// takes about two minutes. coturn's turnserver (Debian package coturn)
// runs with its defaults (a relay thread per CPU) and use-auth-secret;
// Parley's server runs in a child process (this test binary, re-executed:
// the same Listen and New as cmd/parley, one UDP socket per CPU), so that
// both are separate processes measured the same way. Each listens on a free
// port of 127.0.0.1 and relays on a port range of its own.
//
// turnutils_uclient then loads each server in turn: 50 clients relaying to
// each other (-y, so every message crosses two allocations) over channels,
// 1,000-byte messages, once paced (20 ms apart, like RTP) and once as a
// flood (no pause). For each it reports messages delivered per second
// (between the client's first and last progress line that show traffic
// under way), messages lost, and the server's CPU seconds (utime+stime from
// /proc, before and after the load) per 100,000 delivered messages, with the
// ratio Parley/coturn. A table goes to stdout; the same figures are the
// benchmark's metrics.
//
// The load client, both servers and anything else running share the CPUs:
// run it on a quiet machine, without -race, and with -count 3 or more when
// the machine is not quiet. CPU per message is the steadiest figure;
// throughput and loss under the flood, which overloads both servers, depend
// on what else runs. PARLEY_RELAYBENCH_CPUPROFILE=FILE writes a CPU profile
// of Parley's server process (perf record -p gives a fuller picture: Go's
// profiler misses much of the time in the scheduler). Without coturn the
// benchmark skips, and fails in CI (CI=true).
func BenchmarkRelayVsCoturn(b *testing.B) {
	turnserver := coturnTool(b, "turnserver")
	uclient := coturnTool(b, "turnutils_uclient")
	servers := []*benchServer{
		startCoturn(b, turnserver),
		startParleyProcess(b),
	}

	var table [][]relayRun
	for _, sc := range relayBenchScenarios {
		runs := make([]relayRun, len(servers))
		for i, srv := range servers {
			b.Run(sc.name+"/"+srv.name, func(b *testing.B) {
				r := runUclient(b, uclient, srv, sc.interval, sc.messages)
				r.scenario, r.server = sc.name, srv.name
				runs[i] = r
				b.ReportMetric(r.rate, "msgs/s")
				b.ReportMetric(r.lostPct, "lost%")
				b.ReportMetric(r.cpuPer100k(), "cpu-s/100k-msgs")
				if i > 0 && runs[0].server != "" {
					b.ReportMetric(ratio(r.cpuPer100k(), runs[0].cpuPer100k()), "cpu-ratio-vs-coturn")
				}
			})
		}
		table = append(table, runs)
	}
	printRelayTable(os.Stdout, table)
}

// relayRun is the outcome of one load against one server.
type relayRun struct {
	scenario, server string
	sent, recv       int     // messages, as counted by the client
	lost             int     // sent and never received
	lostPct          float64 // lost/sent, %
	sendDropped      int     // messages the client could not send (socket full)
	rtt              float64 // average round trip, ms
	rate             float64 // messages delivered per second
	serverCPU        time.Duration
	clientCPU        time.Duration
}

// cpuPer100k is the server's CPU seconds per 100,000 delivered messages.
func (r relayRun) cpuPer100k() float64 {
	if r.recv == 0 {
		return 0
	}
	return r.serverCPU.Seconds() / float64(r.recv) * 1e5
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func printRelayTable(w io.Writer, table [][]relayRun) {
	fmt.Fprintf(w, "\nTURN relay, %d clients (-y, channels), %d-byte messages; server CPU from /proc per 100k delivered\n",
		relayBenchClients, relayBenchMsgSize)
	fmt.Fprintf(w, "%-6s %-7s %8s %9s %16s %7s %9s %7s %8s %10s %8s\n",
		"load", "server", "sent", "delivered", "lost", "unsent", "msgs/s", "rtt ms", "cpu s", "cpu s/100k", "client s")
	for _, runs := range table {
		for _, r := range runs {
			if r.server == "" { // left out by -bench
				continue
			}
			fmt.Fprintf(w, "%-6s %-7s %8d %9d %16s %7d %9.0f %7.2f %8.2f %10.3f %8.2f\n",
				r.scenario, r.server, r.sent, r.recv, fmt.Sprintf("%d (%.2f%%)", r.lost, r.lostPct),
				r.sendDropped, r.rate, r.rtt, r.serverCPU.Seconds(), r.cpuPer100k(), r.clientCPU.Seconds())
		}
		if c, p := runs[0], runs[1]; c.server != "" && p.server != "" {
			fmt.Fprintf(w, "%-6s parley/coturn: cpu per message ×%.2f, msgs/s ×%.2f, lost %d vs %d\n",
				c.scenario, ratio(p.cpuPer100k(), c.cpuPer100k()), ratio(p.rate, c.rate), p.lost, c.lost)
		}
	}
}

// benchServer is a TURN server process under test.
type benchServer struct {
	name string
	port int
	cmd  *exec.Cmd
	out  *syncBuffer // its output, for errors
	done chan struct{}
	err  error // the result of Wait; read after done
}

// wait reports the process's end after Start.
func (s *benchServer) wait() {
	s.done = make(chan struct{})
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()
}

// stop ends the process: with sig, and after a few seconds by killing it.
// With checkExit, an exit other than 0 is an error.
func (s *benchServer) stop(tb testing.TB, sig func() error, checkExit bool) {
	select {
	case <-s.done:
	default:
		if err := sig(); err != nil {
			tb.Logf("%s: %v", s.name, err)
		}
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			tb.Errorf("%s did not stop; killing it", s.name)
			s.cmd.Process.Kill()
			<-s.done
		}
	}
	if checkExit && s.err != nil {
		tb.Errorf("%s: %v\n%s", s.name, s.err, s.out.String())
	}
}

// cpu returns the CPU time the process has used so far.
func (s *benchServer) cpu(tb testing.TB) time.Duration {
	tb.Helper()
	d, err := procCPU(s.cmd.Process.Pid)
	if err != nil {
		tb.Fatalf("%s: %v", s.name, err)
	}
	return d
}

// startCoturn runs turnserver on a free port of 127.0.0.1 with a
// configuration of its own (every other setting at coturn's default) and
// waits until it answers STUN.
func startCoturn(tb testing.TB, path string) *benchServer {
	tb.Helper()
	dir := tb.TempDir()
	port := freePort(tb)
	lo, hi, _ := strings.Cut(coturnRelayPorts, "-")
	conf := strings.Join([]string{
		"listening-ip=127.0.0.1",
		"relay-ip=127.0.0.1",
		"listening-port=" + strconv.Itoa(port),
		"min-port=" + lo,
		"max-port=" + hi,
		"use-auth-secret",
		"static-auth-secret=" + relayBenchSecret,
		"realm=" + DefaultRealm,
		"no-tls",
		"no-dtls",
		"no-cli",
		"allow-loopback-peers", // the peers are its own relays on 127.0.0.1
		"no-multicast-peers",
		"log-file=stdout",
		"simple-log",
		"pidfile=" + filepath.Join(dir, "turnserver.pid"), // not the service's /var/run/turnserver.pid
		"",
	}, "\n")
	confPath := filepath.Join(dir, "turnserver.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	s := &benchServer{name: "coturn", port: port, out: &syncBuffer{}}
	s.cmd = exec.Command(path, "-c", confPath)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", path, err)
	}
	s.wait()
	tb.Cleanup(func() { s.stop(tb, func() error { return s.cmd.Process.Signal(syscall.SIGTERM) }, false) })
	waitSTUN(tb, s)
	return s
}

// startParleyProcess runs Parley's TURN server in a child process (see
// runRelayBenchServer) and waits until it listens.
func startParleyProcess(tb testing.TB) *benchServer {
	tb.Helper()
	ready := make(chan int, 1)
	s := &benchServer{name: "parley", out: &syncBuffer{}}
	s.cmd = exec.Command(os.Args[0])
	s.cmd.Env = append(os.Environ(), relayBenchServerEnv+"=1")
	s.cmd.Stdout = &lineWriter{w: s.out, line: func(line string) {
		if port, ok := strings.CutPrefix(line, relayBenchReady+" "); ok {
			p, _ := strconv.Atoi(port)
			ready <- p
		}
	}}
	s.cmd.Stderr = s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := s.cmd.StdinPipe() // closing it stops the server
	if err != nil {
		tb.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		tb.Fatalf("start the parley server process: %v", err)
	}
	s.wait()
	tb.Cleanup(func() { s.stop(tb, stdin.Close, true) })

	select {
	case s.port = <-ready:
	case <-s.done:
		tb.Fatalf("the parley server process ended: %v\n%s", s.err, s.out.String())
	case <-time.After(30 * time.Second):
		tb.Fatalf("the parley server process did not start\n%s", s.out.String())
	}
	waitSTUN(tb, s)
	return s
}

// runRelayBenchServer is Parley's TURN server for BenchmarkRelayVsCoturn, run
// in a process of its own (TestMain calls it when relayBenchServerEnv is set).
// It serves as cmd/parley does (Listen, New), allowing relays to 127.0.0.1 as
// --turn-allow-peers 127.0.0.1/32 would, prints its port and stops when its
// standard input closes.
func runRelayBenchServer() error {
	if path := os.Getenv(relayBenchProfileEnv); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	cfg := config.Default().TURN
	cfg.Listen = "127.0.0.1:0"
	cfg.Secret = relayBenchSecret
	cfg.AllowPeers = []string{"127.0.0.1/32"}
	// turnutils_uclient makes every allocation as one user; coturn's
	// default quota is unlimited.
	cfg.UserQuota = 1000
	if err := cfg.RelayPorts.UnmarshalText([]byte(parleyRelayPorts)); err != nil {
		return err
	}
	ls, err := Listen(cfg, false)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := New(cfg, ls, Options{PublicIPs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, log)
	if err != nil {
		return err
	}
	fmt.Printf("%s %d\n", relayBenchReady, s.Endpoint().Port)
	io.Copy(io.Discard, os.Stdin)
	return s.Close()
}

// waitSTUN waits until the server answers a STUN Binding request over UDP.
func waitSTUN(tb testing.TB, s *benchServer) {
	tb.Helper()
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)))
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw
	buf := make([]byte, 1500)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			tb.Fatalf("%s ended: %v\n%s", s.name, s.err, s.out.String())
		default:
		}
		if _, err := c.Write(req); err != nil {
			tb.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && stun.IsMessage(buf[:n]) {
			return
		}
	}
	tb.Fatalf("%s does not answer STUN on port %d\n%s", s.name, s.port, s.out.String())
}

var (
	progressRE = regexp.MustCompile(`msz=\d+, tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	totalsRE   = regexp.MustCompile(`start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)`)
	lossRE     = regexp.MustCompile(`Total lost packets (\d+) \(([\d.]+)%\), total send dropped (\d+)`)
	rttRE      = regexp.MustCompile(`Average round trip delay ([\d.]+) ms`)
	transmitRE = regexp.MustCompile(`Total transmit time is (\d+)`)
)

// progress is one of the client's progress lines (about one a second),
// with the time it arrived.
type progress struct {
	at   time.Time
	recv int
}

// runUclient runs the load against s and measures the server's CPU around it.
func runUclient(tb testing.TB, path string, s *benchServer, interval, messages int) relayRun {
	tb.Helper()
	args := []string{
		"-W", relayBenchSecret, "-u", "relay-bench",
		"-y", "-c", // client to client, no RTCP allocations
		"-m", strconv.Itoa(relayBenchClients), "-l", strconv.Itoa(relayBenchMsgSize),
		"-n", strconv.Itoa(messages), "-z", strconv.Itoa(interval),
		"-p", strconv.Itoa(s.port), "127.0.0.1",
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out := &syncBuffer{}
	cmd.Stderr = out

	cpu0 := s.cpu(tb)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", path, err)
	}
	var samples []progress
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		if m := progressRE.FindStringSubmatch(line); m != nil {
			recv, _ := strconv.Atoi(m[2])
			samples = append(samples, progress{time.Now(), recv})
		}
	}
	err = cmd.Wait()
	cpu1 := s.cpu(tb)
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", path, strings.Join(args, " "), err, out.String())
	}

	text := out.String()
	r := relayRun{serverCPU: cpu1 - cpu0, clientCPU: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
	m := totalsRE.FindStringSubmatch(text)
	l := lossRE.FindStringSubmatch(text)
	if m == nil || l == nil {
		tb.Fatalf("no totals in the output of %s:\n%s", path, text)
	}
	r.sent, _ = strconv.Atoi(m[1])
	r.recv, _ = strconv.Atoi(m[2])
	r.lost, _ = strconv.Atoi(l[1])
	r.lostPct, _ = strconv.ParseFloat(l[2], 64)
	r.sendDropped, _ = strconv.Atoi(l[3])
	if m := rttRE.FindStringSubmatch(text); m != nil {
		r.rtt, _ = strconv.ParseFloat(m[1], 64)
	}
	r.rate = deliveryRate(samples, r.recv)
	if r.rate == 0 { // too short for two progress lines under way
		if m := transmitRE.FindStringSubmatch(text); m != nil {
			if secs, _ := strconv.Atoi(m[1]); secs > 0 {
				r.rate = float64(r.recv) / float64(secs)
			}
		}
	}
	if r.sent < relayBenchClients*messages/2 {
		tb.Errorf("%s sent only %d of %d messages:\n%s", path, r.sent, relayBenchClients*messages, text)
	}
	return r
}

// deliveryRate is the rate at which messages were delivered between the
// first and the last progress line taken while messages were under way:
// clients start at random within their first seconds and wait for
// stragglers at the end, and neither should count.
func deliveryRate(samples []progress, total int) float64 {
	first, last := -1, -1
	for i, p := range samples {
		if p.recv > 0 && p.recv < total {
			if first < 0 {
				first = i
			}
			last = i
		}
	}
	// Widen by one line each way: the line before the first carries no
	// deliveries yet, the line after the last carries them all.
	if first < 0 {
		return 0
	}
	first = max(first-1, 0)
	last = min(last+1, len(samples)-1)
	d := samples[last].at.Sub(samples[first].at).Seconds()
	if last <= first || d <= 0 {
		return 0
	}
	return float64(samples[last].recv-samples[first].recv) / d
}

// procCPU returns utime+stime of a process (all its threads) from
// /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime and stime fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (getconf CLK_TCK):
// 100 on every Linux architecture Go supports that has /proc.
const clockTicks = 100

// freePort returns a port of 127.0.0.1 that is free for UDP and TCP now.
func freePort(tb testing.TB) int {
	tb.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		pc.Close()
		if err == nil {
			l.Close()
			return port
		}
	}
	tb.Fatal("no port free for both UDP and TCP on 127.0.0.1")
	return 0
}

// syncBuffer is a bytes.Buffer for a process's output, read while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// lineWriter passes what is written to w and each complete line to line.
// Only its process's output goroutine writes to it.
type lineWriter struct {
	w       io.Writer
	line    func(string)
	partial []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.line(string(l.partial[:i]))
		l.partial = l.partial[i+1:]
	}
	return l.w.Write(p)
}
