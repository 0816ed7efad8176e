package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// perfRecord samples the server's stacks with perf for d, writes perf's own
// flat report next to the data, and returns a summary of where the time
// went, by category.
func perfRecord(dir, pid string, sc scenario, d time.Duration) (string, error) {
	data := filepath.Join(dir, "parley-"+sc.String()+".perf.data")
	secs := strconv.Itoa(max(int(d.Seconds()), 1))
	rec := exec.Command("perf", "record", "-q", "-F", "499", "-g", "-p", pid, "-o", data, "--", "sleep", secs)
	if out, err := rec.CombinedOutput(); err != nil {
		return "", fmt.Errorf("perf record: %v: %s", err, out)
	}
	flat := exec.Command("perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--sort", "dso,symbol", "--percent-limit", "0.5")
	if out, err := flat.Output(); err == nil {
		_ = os.WriteFile(strings.TrimSuffix(data, ".data")+".txt", out, 0o644)
	}
	script := exec.Command("perf", "script", "-i", data, "-F", "ip,sym")
	stdout, err := script.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := script.Start(); err != nil {
		return "", fmt.Errorf("perf script: %w", err)
	}
	counts, total := classifyStacks(stdout)
	if err := script.Wait(); err != nil {
		return "", fmt.Errorf("perf script: %w", err)
	}
	if total == 0 {
		return "", fmt.Errorf("perf recorded no samples")
	}
	type share struct {
		name string
		n    int
	}
	var shares []share
	for name, n := range counts {
		shares = append(shares, share{name, n})
	}
	slices.SortFunc(shares, func(a, b share) int { return b.n - a.n })
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d samples; flat profile in %s.txt\n", total, strings.TrimSuffix(data, ".data"))
	for _, s := range shares {
		fmt.Fprintf(&sb, "    %5.1f%%  %s\n", 100*float64(s.n)/float64(total), s.name)
	}
	return sb.String(), nil
}

// categories name what a stack sample was doing. The first category with a
// pattern that any frame of the stack matches wins, so they go from the
// innermost layer outwards: a sample in the kernel's sendto under pion's
// ICE write under SRTP under the NACK responder under downTrack.write is
// kernel time; one in the NACK responder's copy, NACK responder time. Go
// runtime work (allocation, channel operations, locks) is so charged to the
// layer that asked for it.
var categories = []struct {
	name     string
	patterns []string
}{
	{"kernel: UDP send (incl. loopback delivery to the receiving socket)", []string{"__sys_sendto", "__sys_sendmsg", "udp_sendmsg"}},
	{"kernel: UDP receive", []string{"__sys_recvfrom", "__sys_recvmsg", "udp_recvmsg"}},
	{"kernel: futex, epoll, context switches (goroutine and thread wake-ups)", []string{"futex", "epoll", "__schedule", "finish_task_switch", "nanosleep", "sched_yield"}},
	{"pion: ICE and mux write path", []string{"pion/ice/v4.(*Conn).Write", "internal/mux.(*Endpoint).Write", "candidateBase).writeTo", "UDPMuxDefault).writeTo", "udpMuxedConn).WriteTo"}},
	{"SRTP/SRTCP encrypt", []string{"SessionSRTP).writeRTP", "SessionSRTCP).write", "srtp/v3.(*Context).encrypt"}},
	{"SRTP/SRTCP decrypt (publishers' media, subscribers' RTCP)", []string{"srtp/v3.(*Context).decrypt", "SessionSRTP).decrypt", "SessionSRTCP).decrypt"}},
	{"pion: RTP sender path", []string{"srtpWriterFuture", "(*RTPSender).Send"}},
	{"sfu: counter interceptor", []string{"sfu.(*counter)", "sfu.(*sentLog)"}},
	{"interceptor: NACK responder (copies every forwarded packet into its cache)", []string{"nack.(*ResponderInterceptor)", "rtpbuffer."}},
	{"interceptor: reports, NACK generator, TWCC", []string{"interceptor/pkg/", "interceptorToTrackLocalWriter"}},
	{"sfu: downTrack.write (header rewrite, abs-send-time)", []string{"sfu.(*downTrack).write", "sfu.putAbsSendTime"}},
	{"sfu: queues (enqueue, writer loops)", []string{"sfu.(*downTrack).writeLoop", "sfu.(*downTrack).enqueue"}},
	{"pion: ICE receive (UDP mux)", []string{"pion/ice/v4"}},
	{"pion: SRTP read streams, buffers", []string{"pion/srtp", "pion/transport", "(*TrackRemote)", "(*RTPReceiver)", "(*RTPSender).Read", "internal/mux.(*Mux)"}},
	{"sfu: publisher read loop, RTCP loops", []string{"sfu.(*pubTrack)", "sfu.(*downTrack).rtcpLoop"}},
	{"pion: DTLS, SCTP", []string{"pion/dtls", "pion/sctp"}},
	{"parley: signaling, SFU control, HTTP", []string{"parley-chat/parley", "gorilla/websocket", "net/http", "encoding/json"}},
	{"pion: other", []string{"pion/"}},
	{"Go GC", []string{"runtime.gcBgMarkWorker", "runtime.gcDrain", "runtime.bgsweep", "runtime.bgscavenge", "runtime.gcStart", "runtime.markroot", "runtime.gcAssist"}},
	{"Go timers", []string{"runtime.runTimer", "runtime.(*timers)", "runtime.checkTimers"}},
	{"Go scheduler (idle, park, wake)", []string{"runtime.schedule", "runtime.findRunnable", "runtime.mcall", "runtime.park_m", "runtime.mstart", "runtime.sysmon", "runtime.netpoll"}},
}

// classifyStacks reads `perf script -F ip,sym` and counts samples per
// category.
func classifyStacks(r io.Reader) (map[string]int, int) {
	counts := map[string]int{}
	total := 0
	var frames []string
	flush := func() {
		if len(frames) == 0 {
			return
		}
		total++
		counts[classify(frames)]++
		frames = frames[:0]
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			flush()
			continue
		}
		// "ffffffff81e64844 netif_skb_features" or "b44e pkg.Func".
		_, sym, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		frames = append(frames, strings.TrimSpace(sym))
	}
	flush()
	return counts, total
}

func classify(frames []string) string {
	for _, c := range categories {
		for _, f := range frames {
			for _, p := range c.patterns {
				if strings.Contains(f, p) {
					return c.name
				}
			}
		}
	}
	// The innermost frame of our own, for what the categories miss.
	for _, f := range frames {
		if !strings.HasPrefix(f, "runtime.") && !strings.HasPrefix(f, "sync.") && f != "[unknown]" {
			return "other: " + f
		}
	}
	return "other: " + frames[0]
}
