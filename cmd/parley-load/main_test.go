package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// The floor relay is this binary run again (see startRelay).
	if len(os.Args) > 1 && os.Args[1] == relayFlag {
		if err := runRelay(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}
	os.Exit(m.Run())
}

// TestSmallRoom runs a 1×2 room for 2 s through parley and through the
// floor relay, in a network namespace of its own, and checks the figures.
func TestSmallRoom(t *testing.T) {
	if !inNetns() {
		if os.Geteuid() != 0 {
			if os.Getenv("CI") == "true" {
				t.Fatal("needs root for a network namespace with only loopback (CI runs as root)")
			}
			t.Skip("needs root for a network namespace with only loopback")
		}
		code, err := runInNetns([]string{"-test.run=^TestSmallRoom$", "-test.v"})
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Fatalf("the test in the network namespace failed (exit %d)", code)
		}
		return
	}
	if err := loopbackUp(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bin, err := buildParley(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	o := &options{
		duration:        2 * time.Second,
		warmup:          time.Second,
		drain:           500 * time.Millisecond,
		setupTimeout:    20 * time.Second,
		joinConcurrency: 4,
		media:           mediaConfig{VideoBitrate: 1_000_000, FPS: 30, MaxPayload: 1100, Audio: true, AudioBitrate: 32_000},
		parleyBin:       bin,
		floor:           true,
		log:             slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	sc := scenario{pubs: 1, subs: 2}
	res := &result{sc: sc}
	if err := runSFU(ctx, o, sc, res); err != nil {
		t.Fatal(err)
	}
	if err := runFloor(ctx, o, sc, res); err != nil {
		t.Fatal(err)
	}

	// One publisher, 120 video + 50 audio packets/s, to two subscribers.
	for name, ph := range map[string]phaseResult{"sfu": res.sfu, "floor": res.floor} {
		perSec := ph.perSecond(ph.forwarded)
		if perSec < 200 || perSec > 400 {
			t.Errorf("%s: %.0f packets/s forwarded, want about 340", name, perSec)
		}
		if ph.expected == 0 || ph.loss() > 0.05 {
			t.Errorf("%s: %d of %d packets received", name, ph.received, ph.expected)
		}
		if ph.cpu <= 0 {
			t.Errorf("%s: no CPU time measured", name)
		}
	}
	if res.rssDuring <= res.rssBefore {
		t.Errorf("server RSS did not grow: %d → %d", res.rssBefore, res.rssDuring)
	}

	var out bytes.Buffer
	printReport(&out, o, []*result{res})
	t.Logf("\n%s", out.String())
	var row string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "1x2 ") {
			row = l
		}
	}
	if f := strings.Fields(row); len(f) != 11 {
		t.Errorf("table row %q: %d columns, want 11", row, len(f))
	}
}

// testWriter sends log lines to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}
