// Package e2e starts the whole program: the parley binary and headless Chromium,
// each inside network namespaces that the test builds and tears down, so no
// packet leaves the machine and tests can shape the network (NATs, blocked UDP).
package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// parleyBin is the race-enabled parley binary built once by TestMain.
var parleyBin string

// nsCounter makes namespace names unique within one test process.
var nsCounter atomic.Int64

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if reason := labUnavailable(); reason != "" {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "e2e: FAIL:", reason, "(CI never skips; run `make test`, which installs what is missing)")
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: skipping browser and network tests:", reason)
		return 0
	}
	cleanStaleNamespaces()
	dir, err := os.MkdirTemp("", "parley-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	parleyBin = filepath.Join(dir, "parley")
	// Tests run the race-enabled binary; benchmarks measure what people run.
	flag.Parse()
	args := []string{"build", "-race", "-o", parleyBin, "../cmd/parley"}
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		args = slices.Delete(args, 1, 2)
	}
	build := exec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: build parley:", err)
		return 1
	}
	return m.Run()
}

// labUnavailable says why the lab cannot run here, or "" if it can.
func labUnavailable() string {
	if os.Geteuid() != 0 {
		return "network namespaces need root"
	}
	for _, tool := range []string{"ip", "iptables", chromiumPath} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " is not installed"
		}
	}
	return ""
}

// cleanStaleNamespaces deletes namespaces left by an earlier run that was
// killed before its cleanup ran.
func cleanStaleNamespaces() {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, "pe2e")
		if !ok {
			continue
		}
		pid, _, _ := strings.Cut(rest, "x")
		if n, err := strconv.Atoi(pid); err == nil && n != os.Getpid() {
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", n)); err != nil {
				exec.Command("ip", "netns", "del", name).Run()
			}
		}
	}
}

// netns is a network namespace owned by one test.
type netns struct {
	name string
}

// newNetns creates a namespace with loopback up and IPv6 off (so no duplicate
// address detection delays), deleted when the test ends.
func newNetns(t testing.TB) *netns {
	t.Helper()
	n := &netns{name: fmt.Sprintf("pe2e%dx%d", os.Getpid(), nsCounter.Add(1))}
	mustRun(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() {
		// Processes still inside keep the namespace alive; kill them first.
		if pids, err := exec.Command("ip", "netns", "pids", n.name).Output(); err == nil {
			for _, p := range strings.Fields(string(pids)) {
				exec.Command("kill", "-9", p).Run()
			}
		}
		if out, err := exec.Command("ip", "netns", "del", n.name).CombinedOutput(); err != nil {
			t.Logf("delete namespace %s: %v: %s", n.name, err, out)
		}
	})
	n.run(t, "ip", "link", "set", "lo", "up")
	n.run(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
	return n
}

// run runs a command inside the namespace and fails the test if it fails.
func (n *netns) run(t testing.TB, args ...string) {
	t.Helper()
	mustRun(t, append([]string{"ip", "netns", "exec", n.name}, args...)...)
}

// command returns a command that will run inside the namespace.
func (n *netns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.name, name}, args...)...)
}

// dial opens a connection (network "tcp" or "udp") to addr from inside the
// namespace, such as to a port a browser listens on there. A socket belongs to the namespace it was
// created in, wherever it is used later; so only the thread that creates it
// enters the namespace, and goes back before anything else may run on it.
func (n *netns) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	// The process's namespace: every thread is in it but the one below.
	home, err := os.Open("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	defer home.Close()
	ns, err := os.Open("/var/run/netns/" + n.name)
	if err != nil {
		return nil, err
	}
	defer ns.Close()

	type result struct {
		conn net.Conn
		err  error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := setns(ns); err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("enter namespace %s: %w", n.name, err)}
			return
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, network, addr)
		// A thread that cannot go back stays locked, and the runtime ends it
		// when this goroutine returns. Otherwise it lives on, which matters:
		// a thread's end kills the browsers it started (Pdeathsig).
		if setns(home) == nil {
			runtime.UnlockOSThread()
		}
		done <- result{conn, err}
	}()
	r := <-done
	return r.conn, r.err
}

// setns moves the calling thread into the network namespace ns.
func setns(ns *os.File) error {
	return unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET)
}

func mustRun(t testing.TB, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// link joins two namespaces with a veth pair and gives each end an address
// (CIDR notation). Either namespace may be the same. It returns the names of
// the interfaces in a and in b, for routes and firewall rules.
func link(t testing.TB, a *netns, aAddr string, b *netns, bAddr string) (aIf, bIf string) {
	t.Helper()
	id := nsCounter.Add(1)
	ea, eb := fmt.Sprintf("va%d", id), fmt.Sprintf("vb%d", id)
	mustRun(t, "ip", "link", "add", ea, "netns", a.name, "type", "veth", "peer", "name", eb, "netns", b.name)
	a.run(t, "ip", "addr", "add", aAddr, "dev", ea)
	b.run(t, "ip", "addr", "add", bAddr, "dev", eb)
	a.run(t, "ip", "link", "set", ea, "up")
	b.run(t, "ip", "link", "set", eb, "up")
	return ea, eb
}

// server is a running parley process inside a namespace.
type server struct {
	url string // base URL, e.g. http://10.77.0.1:8080
	cmd *exec.Cmd

	mu  sync.Mutex
	log strings.Builder
}

var runningRE = regexp.MustCompile(`Open (https?://\S+?)/? in your browser`)

// startServer runs parley inside ns with the given flags and waits until it
// serves. The process is stopped when the test ends, and the test fails if the
// race detector reported anything.
func startServer(t testing.TB, ns *netns, args ...string) *server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &server{cmd: ns.command(ctx, parleyBin, args...)}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = &lockedWriter{s: s}
	s.cmd.Cancel = func() error { return s.cmd.Process.Signal(os.Interrupt) }
	s.cmd.WaitDelay = 10 * time.Second
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start parley: %v", err)
	}
	urlc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			s.write(sc.Text() + "\n")
			if m := runningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urlc <- m[1]:
				default:
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		s.cmd.Wait()
		logs := s.logs()
		if strings.Contains(logs, "WARNING: DATA RACE") {
			t.Errorf("parley reported a data race:\n%s", logs)
		} else if t.Failed() || testing.Verbose() {
			t.Logf("parley log:\n%s", logs)
		}
	})
	select {
	case u := <-urlc:
		s.url = u
	case <-time.After(30 * time.Second):
		t.Fatalf("parley did not start within 30s:\n%s", s.logs())
	}
	return s
}

func (s *server) write(p string) {
	s.mu.Lock()
	s.log.WriteString(p)
	s.mu.Unlock()
}

func (s *server) logs() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

type lockedWriter struct{ s *server }

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.s.write(string(p))
	return len(p), nil
}

var _ io.Writer = (*lockedWriter)(nil)
