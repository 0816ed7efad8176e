package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// buildParley builds cmd/parley into dir and returns the binary's path. It
// runs in the module's tree (the working directory must be inside it).
func buildParley(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "parley")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/parley-chat/parley/cmd/parley")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build parley: %w\n%s", err, out.Bytes())
	}
	return bin, nil
}

// server is a parley process started for one phase of a scenario.
type server struct {
	cmd  *exec.Cmd
	pid  string
	url  string // http://127.0.0.1:PORT
	logs *tail
	done chan struct{} // closed when the process has exited
}

// openLine is what parley prints on stdout once it serves.
var openLine = regexp.MustCompile(`Open (http://\S+?)/? in your browser`)

// startParley runs parley on loopback with ports picked by the kernel, no
// TURN, and limits high enough for one room of every client of the tool, and
// waits until it serves.
// With a non-nil echo, the server's log goes there too.
func startParley(bin, dataDir string, maxParticipants int, echo io.Writer, extra []string) (*server, error) {
	args := []string{
		"--listen", "127.0.0.1:0",
		"--turn=false",
		"--public-ip", "127.0.0.1",
		"--sfu-udp-port", "0",
		"--sfu-tcp-port", "0",
		"--max-participants", strconv.Itoa(maxParticipants),
		// Every client of the tool comes from 127.0.0.1.
		"--connections-per-client", strconv.Itoa(maxParticipants + 16),
		"--data-dir", dataDir,
		"--log-level", "warn",
	}
	cmd := exec.Command(bin, append(args, extra...)...)
	// Killed with the tool, should the tool die without stopping it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, logs: newTail(40), done: make(chan struct{})}
	cmd.Stderr = s.logs
	if echo != nil {
		cmd.Stderr = io.MultiWriter(s.logs, echo)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start parley: %w", err)
	}
	s.pid = strconv.Itoa(cmd.Process.Pid)
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := openLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urls <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	select {
	case s.url = <-urls:
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("parley exited at start: %s\n%s", cmd.ProcessState, s.logs)
	case <-time.After(15 * time.Second):
		s.stop()
		return nil, fmt.Errorf("parley did not print its address within 15 s\n%s", s.logs)
	}
}

// stop ends the process: SIGTERM, then SIGKILL if it has not exited within
// 5 s (it closes every PeerConnection on the way out).
func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// exited reports whether the process has ended.
func (s *server) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// createRoom creates an SFU room and returns its id.
func (s *server) createRoom(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/api/rooms", strings.NewReader(`{"mode":"sfu"}`))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("create room: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("create room: %s: %s", resp.Status, body)
	}
	var room struct {
		ID   string `json:"id"`
		Mode string `json:"mode"`
	}
	if err := json.Unmarshal(body, &room); err != nil || room.ID == "" {
		return "", fmt.Errorf("create room: unexpected answer %s", body)
	}
	if room.Mode != "sfu" {
		return "", fmt.Errorf("create room: mode %q, not sfu", room.Mode)
	}
	return room.ID, nil
}

// metrics reads the unlabelled samples of parley's /metrics.
func (s *server) metrics(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
			m[name] = v
		}
	}
	return m, sc.Err()
}

// tail keeps the last lines written to it: a child's log, shown when it
// fails.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string // Guarded by mu.
	part  []byte   // Guarded by mu: an unfinished line.
}

func newTail(n int) *tail { return &tail{max: n} }

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.part = append(t.part, b...)
	for {
		i := bytes.IndexByte(t.part, '\n')
		if i < 0 {
			break
		}
		t.lines = append(t.lines, string(t.part[:i]))
		t.part = t.part[i+1:]
		if len(t.lines) > t.max {
			t.lines = t.lines[len(t.lines)-t.max:]
		}
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
