package main

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCommands builds parley and runs `parley version` and `parley check`
// as a person would.
func TestCommands(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "parley")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	// run returns the combined output and the exit code.
	run := func(t *testing.T, args ...string) (string, int) {
		t.Helper()
		var out bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		var exit *exec.ExitError
		switch {
		case err == nil:
			return out.String(), 0
		case errors.As(err, &exit):
			return out.String(), exit.ExitCode()
		}
		t.Fatalf("run %v: %v", args, err)
		return "", 0
	}
	// Everything on loopback, ports picked by the kernel.
	local := []string{"--listen", "127.0.0.1:0", "--turn-listen", "127.0.0.1:0",
		"--sfu-udp-port", "0", "--sfu-tcp-port", "0", "--public-ip", "127.0.0.1"}

	t.Run("version", func(t *testing.T) {
		out, code := run(t, "version")
		if code != 0 || !strings.HasPrefix(out, "parley ") || !strings.Contains(out, runtime.Version()) || !strings.Contains(out, "revision ") {
			t.Errorf("parley version: exit %d\n%s", code, out)
		}
	})

	t.Run("check passes", func(t *testing.T) {
		out, code := run(t, append([]string{"check"}, local...)...)
		t.Logf("parley check:\n%s", out)
		if code != 0 {
			t.Fatalf("exit %d, want 0", code)
		}
		for _, want := range []string{
			"ok    listen (page, /ws, /api): tcp 127.0.0.1:",
			"ok    turn-listen: udp and tcp 127.0.0.1:",
			"ok    sfu-udp-port",
			"ok    127.0.0.1, from --public-ip",
			"warn  127.0.0.1 is a loopback address",
			"ok    allocation over udp: relay 127.0.0.1:",
			"ok    allocation over tcp: relay 127.0.0.1:",
			"ok    ICE and DTLS over udp4: connected",
			"ok    ICE and DTLS over tcp4: connected",
			"All checks passed, with",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
	})

	t.Run("check fails on a busy port", func(t *testing.T) {
		busy, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		args := append([]string{"check"}, local...)
		args = append(args, "--metrics-listen", busy.Addr().String())
		out, code := run(t, args...)
		if code != 1 || !strings.Contains(out, "FAIL  metrics-listen: tcp "+busy.Addr().String()) || !strings.Contains(out, "1 failed") {
			t.Errorf("exit %d, want 1 and a FAIL naming %s:\n%s", code, busy.Addr(), out)
		}
	})

	t.Run("check with a bad setting", func(t *testing.T) {
		out, code := run(t, "check", "--max-participants", "1")
		if code != 2 || !strings.Contains(out, "rooms.max_participants") {
			t.Errorf("exit %d, want 2 naming rooms.max_participants:\n%s", code, out)
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		out, code := run(t, "serve")
		if code != 2 || !strings.Contains(out, `unknown command "serve"`) || !strings.Contains(out, "parley check") {
			t.Errorf("exit %d, want 2 and the list of commands:\n%s", code, out)
		}
	})

	// systemctl reload sends SIGHUP; without certificate files to reload it
	// must not end the server, as SIGHUP's default action would.
	t.Run("SIGHUP without TLS", func(t *testing.T) {
		cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--turn=false", "--sfu-udp-port", "0", "--sfu-tcp-port", "0")
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = tWriter{t}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || !strings.Contains(sc.Text(), "Open http://") {
			t.Fatalf("first line: %q", sc.Text())
		}
		url := regexp.MustCompile(`http://\S+?/`).FindString(sc.Text())
		cmd.Process.Signal(syscall.SIGHUP)
		for range 3 { // still serving after it
			time.Sleep(50 * time.Millisecond)
			resp, err := http.Get(url + "readyz")
			if err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("after SIGHUP: GET /readyz: %v %v", resp, err)
			}
			resp.Body.Close()
		}
		cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	})

	t.Run("help lists the commands", func(t *testing.T) {
		out, code := run(t, "--help")
		if code != 0 || !strings.Contains(out, "parley version") || !strings.Contains(out, "parley check [flags]") {
			t.Errorf("--help: exit %d\n%s", code, out)
		}
	})
}
