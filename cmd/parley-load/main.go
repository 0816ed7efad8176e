// Command parley-load measures what forwarding costs Parley's SFU: pion
// publishers send real RTP (VP8 at a fixed bitrate, Opus optionally) through
// the real signaling protocol to a parley process, pion subscribers receive
// it, and the tool reports packets forwarded per second, loss, the server's
// CPU time per forwarded packet and its memory per connection. In the same
// run it measures a floor: the same packets fanned out by a plain UDP relay
// with no WebRTC, in a process of its own, so the two CPU costs compare.
//
//	go run ./cmd/parley-load -scenarios 1x50,1x200,10x10 -duration 20s
//
// PxK is P publishers and K subscribers in one room; publishers receive
// each other's streams too, as in a call. Everything runs on 127.0.0.1 in a
// network namespace of its own (root needed; -netns=false runs here).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == relayFlag {
		if err := runRelay(); err != nil {
			fmt.Fprintln(os.Stderr, "floor relay:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the tool with its arguments; it returns the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("parley-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		scenarios    = fs.String("scenarios", "1x50,1x200,10x10", "comma-separated PUBLISHERSxSUBSCRIBERS rooms to measure, one after the other")
		duration     = fs.Duration("duration", 20*time.Second, "measurement window of each phase (SFU, floor) of each scenario")
		warmup       = fs.Duration("warmup", 3*time.Second, "media flowing to everyone before the window opens")
		setupTimeout = fs.Duration("setup-timeout", 90*time.Second, "time for every participant to join and receive every stream")
		bitrate      = fs.Int("bitrate", 1_000_000, "video bitrate of each publisher, bits/s")
		fps          = fs.Int("fps", 30, "video frames per second")
		payload      = fs.Int("payload", 1100, "largest RTP payload of a video packet, bytes")
		audio        = fs.Bool("audio", false, "publishers also send Opus (50 packets/s of 80 bytes)")
		joins        = fs.Int("join-concurrency", 16, "subscribers joining at once")
		floor        = fs.Bool("floor", true, "also measure the plain UDP fan-out floor")
		parleyBin    = fs.String("parley", "", "parley binary to run (default: go build ./cmd/parley into a temporary directory)")
		netns        = fs.Bool("netns", true, "run in a new network namespace that has only loopback (needs root)")
		perfDir      = fs.String("perf", "", "record the server with `perf` during each SFU window, reports into this directory (perturbs the figures a little)")
		timeout      = fs.Duration("timeout", 15*time.Minute, "give up after this long")
		verbose      = fs.Bool("v", false, "log the tool's and pion's details")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	scs, err := parseScenarios(*scenarios)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if *fps < 1 || *bitrate < 8*minPayload*(*fps) || *payload < minPayload+vp8DescriptorSize || *payload > 1200 || *joins < 1 {
		fmt.Fprintf(stderr, "need -fps ≥ 1, -bitrate ≥ %d×8×fps, %d ≤ -payload ≤ 1200, -join-concurrency ≥ 1\n", minPayload, minPayload+vp8DescriptorSize)
		return 2
	}
	if *netns && !inNetns() {
		code, err := runInNetns(args)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return code
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	if inNetns() {
		if err := loopbackUp(); err != nil {
			log.Error("network namespace", "err", err)
			return 1
		}
	}
	if err := raiseFileLimit(); err != nil {
		log.Warn("cannot raise the open file limit", "err", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	o := &options{
		duration:        *duration,
		warmup:          *warmup,
		drain:           time.Second,
		setupTimeout:    *setupTimeout,
		joinConcurrency: *joins,
		media: mediaConfig{
			VideoBitrate: *bitrate, FPS: *fps, MaxPayload: *payload,
			Audio: *audio, AudioBitrate: 32_000,
		},
		parleyBin: *parleyBin,
		floor:     *floor,
		perfDir:   *perfDir,
		log:       log,
		verbose:   *verbose,
	}
	if o.parleyBin == "" {
		dir, err := os.MkdirTemp("", "parley-load-")
		if err != nil {
			log.Error("temporary directory", "err", err)
			return 1
		}
		defer os.RemoveAll(dir)
		log.Info("building parley")
		if o.parleyBin, err = buildParley(ctx, dir); err != nil {
			log.Error("build", "err", err)
			return 1
		}
	}
	if o.perfDir != "" {
		if err := os.MkdirAll(o.perfDir, 0o755); err != nil {
			log.Error("perf directory", "err", err)
			return 1
		}
	}

	var results []*result
	failed := false
	for _, sc := range scs {
		res := &result{sc: sc}
		log.Info("scenario: SFU", "scenario", sc, "participants", sc.participants())
		if err := runSFU(ctx, o, sc, res); err != nil {
			log.Error("scenario failed", "scenario", sc, "phase", "sfu", "err", err)
			failed = true
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if o.floor {
			log.Info("scenario: floor", "scenario", sc)
			if err := runFloor(ctx, o, sc, res); err != nil {
				log.Error("scenario failed", "scenario", sc, "phase", "floor", "err", err)
				failed = true
			}
		}
		results = append(results, res)
		if ctx.Err() != nil {
			break
		}
	}
	printReport(stdout, o, results)
	if failed {
		return 1
	}
	return 0
}

// raiseFileLimit raises the soft limit of open files to the hard limit, for
// this process and the parley processes it starts (which inherit it): every
// participant holds a socket on each side.
func raiseFileLimit() error {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return err
	}
	l.Cur = l.Max
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
}

// cores is the number of CPUs the tool and the server share.
func cores() int { return runtime.NumCPU() }
