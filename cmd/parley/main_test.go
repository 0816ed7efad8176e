package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/parley-chat/parley/config"
)

func testConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.Listen = "127.0.0.1:0"
	cfg.TURN.Enabled = false
	cfg.SFU.UDPPort, cfg.SFU.TCPPort = 0, 0
	return cfg
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestPortInUseFailsWithAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t)
	cfg.Listen = busy.Addr().String()

	done := make(chan error, 1)
	go func() { done <- run(context.Background(), cfg, testLogger(t), io.Discard) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), busy.Addr().String()) {
			t.Fatalf("run = %v, want an error naming %s", err, busy.Addr())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("run did not fail at once on a port in use")
	}
}

// startRun runs the program in-process and returns its base URL.
func startRun(t *testing.T, ctx context.Context, cfg config.Config) (string, chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, testLogger(t), pw)
		pw.Close()
	}()
	re := regexp.MustCompile(`Open (http://\S+?)/ in your browser`)
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			go io.Copy(io.Discard, pr)
			return m[1], done
		}
	}
	t.Fatalf("run ended before serving: %v", <-done)
	return "", nil
}

func TestServesPageAPIAndShutsDownTellingPeers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	base, done := startRun(t, ctx, testConfig(t))

	for path, want := range map[string]int{"/": 200, "/healthz": 200, "/r/nonexistent": 200, "/nope": 404} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
	resp, err := http.Post(base+"/api/rooms", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	var room struct{ ID, URL, Mode string }
	json.NewDecoder(resp.Body).Decode(&room)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || room.URL != base+"/r/"+room.ID || room.Mode != "p2p" {
		t.Fatalf("POST /api/rooms = %d %+v", resp.StatusCode, room)
	}

	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(base, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteJSON(map[string]string{"type": "join", "room": room.ID, "name": "Ada"})
	var joined map[string]any
	ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.ReadJSON(&joined); err != nil || joined["type"] != "joined" {
		t.Fatalf("join: %v %v", joined, err)
	}

	start := time.Now()
	cancel() // as SIGINT would
	var bye map[string]any
	if err := ws.ReadJSON(&bye); err != nil || bye["type"] != "bye" {
		t.Fatalf("want bye before close, got %v %v", bye, err)
	}
	_, _, err = ws.ReadMessage()
	if !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("want close 1001 (going away), got %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown took longer than 5s")
	}
	t.Logf("shutdown took %v", time.Since(start))
}

// TestBinary builds parley and checks what a person sees at the command line:
// --help lists every setting, a bad value names its key, and SIGTERM exits.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "parley")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}

	t.Run("help", func(t *testing.T) {
		out, err := exec.Command(bin, "--help").CombinedOutput()
		if err != nil {
			t.Fatalf("--help: %v\n%s", err, out)
		}
		for _, want := range []string{"-listen", "-room-mode", "-max-participants", "-room-empty-ttl", "-turn-secret", "-sfu-udp-port", "PARLEY_LISTEN", "rooms.empty_ttl"} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("--help does not mention %s:\n%s", want, out)
			}
		}
	})

	t.Run("bad value", func(t *testing.T) {
		cmd := exec.Command(bin, "--max-participants", "1")
		out, err := cmd.CombinedOutput()
		if err == nil || !bytes.Contains(out, []byte("rooms.max_participants")) {
			t.Fatalf("want failure naming rooms.max_participants, got %v:\n%s", err, out)
		}
	})

	t.Run("SIGTERM", func(t *testing.T) {
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--turn=false", "--sfu-udp-port=0", "--sfu-tcp-port=0")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = tWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || !strings.Contains(sc.Text(), "Open http://127.0.0.1:") {
			cmd.Process.Kill()
			t.Fatalf("first line: %q", sc.Text())
		}
		start := time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
		waitErr := make(chan error, 1)
		go func() { waitErr <- cmd.Wait() }()
		select {
		case err := <-waitErr:
			if err != nil {
				t.Fatalf("exit after SIGTERM: %v", err)
			}
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			t.Fatal("did not exit within 5s of SIGTERM")
		}
		t.Logf("exited %v after SIGTERM", time.Since(start))
	})
}
