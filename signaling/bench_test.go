//go:build linux

package signaling_test

// Benchmarks of the signaling relay, for the figures in issue 2:
//
//	go test -run '^$' -bench . -benchtime 3s ./signaling/
//
// Client and server share the machine's cores, so the clients are kept cheap:
// the sender writes one pre-encoded frame (patching a timestamp into it) and
// the receiver only checks a prefix and, when measuring latency, parses that
// timestamp with a byte search.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/signaling"
)

const (
	// benchWindow bounds the candidates sent but not yet received. It stays
	// below the server's per-client send queue (512), so the benchmark measures
	// sustained relaying, never the slow-client disconnect.
	benchWindow = 256
	// benchTimeout bounds any one benchmark phase: sockets get it as deadline.
	benchTimeout = 2 * time.Minute
	// benchRateEnv, if set, is the relay's maximum rate in messages per second;
	// BenchmarkRelayLatency paces at half of it instead of measuring it first.
	benchRateEnv = "PARLEY_BENCH_RELAY_RATE"
	// benchStampDigits is the fixed width of the send timestamp (nanoseconds
	// since the pair's epoch) carried in the candidate's usernameFragment.
	benchStampDigits = 19
	// benchTick is how often the latency benchmark's sender wakes to send
	// the messages that are due: at 90,000 messages per second, bursts of
	// about 20. Finer ticks cost more CPU, on the two cores client and server
	// share, than the smoother pacing saves.
	benchTick = 250 * time.Microsecond
)

var (
	benchStampKey        = []byte(`"usernameFragment":"`)
	benchCandidatePrefix = []byte(`{"type":"candidate"`)
	benchStopPrefix      = []byte(`{"type":"media"`)
)

// BenchmarkRelayThroughput measures how many candidate messages per second the
// server relays from one WebSocket client to another in the same room, with at
// most benchWindow of them in flight.
func BenchmarkRelayThroughput(b *testing.B) {
	p := newBenchPair(b)
	res := p.phase(b, false, func(int) bool { return b.Loop() })
	b.ReportMetric(res.rate(), "msgs/s")
	b.ReportMetric(float64(res.cpu.Microseconds())/float64(res.sent), "cpu-µs/msg")
	b.ReportMetric(float64(len(p.msg)), "B/msg")
}

// BenchmarkRelayLatency paces the sender at half the relay's maximum rate
// (PARLEY_BENCH_RELAY_RATE, or measured for a second first) and reports how
// long candidates take from the sender's write to the receiver's read.
func BenchmarkRelayLatency(b *testing.B) {
	p := newBenchPair(b)
	maxRate, err := strconv.ParseFloat(os.Getenv(benchRateEnv), 64)
	if err != nil || maxRate <= 0 {
		start := time.Now()
		res := p.phase(b, false, func(i int) bool {
			return i < 2_000_000 && time.Since(start) < time.Second
		})
		maxRate = res.rate()
	}
	rate := maxRate / 2
	interval := time.Duration(float64(time.Second) / rate)

	tick := newBenchTicker(b, benchTick)
	var start time.Time
	res := p.phase(b, true, func(i int) bool {
		if !b.Loop() {
			return false
		}
		if i == 0 {
			start = time.Now()
		}
		// Open loop: each message has its due time, and whatever is due
		// at a tick is sent.
		for due := time.Duration(i) * interval; time.Since(start) < due; {
			tick.wait(b)
		}
		return true
	})
	lat := res.latencies
	slices.Sort(lat)
	q := func(f float64) float64 {
		return float64(lat[int(f*float64(len(lat)-1))]) / float64(time.Microsecond)
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(res.rate(), "msgs/s")
	b.ReportMetric(float64(res.cpu.Microseconds())/float64(res.sent), "cpu-µs/msg")
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(q(0.999), "p99.9-µs")
}

// benchTicker paces the latency benchmark's sender. The runtime's timers can
// wake a goroutine a millisecond late when the process is otherwise idle (the
// netpoller then waits in whole milliseconds), which would turn a steady rate
// into bursts of a hundred messages. A timerfd read through the netpoller
// parks the goroutine just the same, without holding a thread or a P, but
// wakes it within microseconds.
type benchTicker struct{ f *os.File }

func newBenchTicker(tb testing.TB, period time.Duration) *benchTicker {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		tb.Fatalf("timerfd_create: %v", err)
	}
	f := os.NewFile(uintptr(fd), "timerfd")
	tb.Cleanup(func() { f.Close() })
	ts := unix.NsecToTimespec(int64(period))
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		tb.Fatalf("timerfd_settime: %v", err)
	}
	return &benchTicker{f: f}
}

// wait returns at the next tick.
func (t *benchTicker) wait(tb testing.TB) {
	var expirations [8]byte
	if _, err := t.f.Read(expirations[:]); err != nil {
		tb.Fatalf("read timerfd: %v", err)
	}
}

// benchPair is a server with two clients in one room: a sends candidates to b.
type benchPair struct {
	a, b  *websocket.Conn
	epoch time.Time // zero of the timestamps
	msg   []byte    // the candidate frame a sends, addressed to b
	stamp []byte    // the timestamp digits inside msg
	stop  []byte    // tells b's reader that a phase is over
}

func newBenchPair(tb testing.TB) *benchPair {
	cfg := config.Default()
	sig := cfg.Signaling
	// The rate limit protects against abusive clients; it is not what is
	// measured here.
	sig.MessageRate = 1e9
	sig.MessageBurst = 1 << 30
	_, wsURL, roomIDs := newBenchServer(tb, cfg.Rooms, sig, 1)

	a := benchDial(tb, wsURL)
	benchJoin(tb, a, roomIDs[0])
	b := benchDial(tb, wsURL)
	bID := benchJoin(tb, b, roomIDs[0])
	deadline := time.Now().Add(benchTimeout)
	a.SetWriteDeadline(deadline)
	a.SetReadDeadline(deadline)
	b.SetReadDeadline(deadline)
	// The benchmark never reads a; this keeps it answering pings.
	go func() {
		for {
			if _, _, err := a.NextReader(); err != nil {
				return
			}
		}
	}()

	zeros := strings.Repeat("0", benchStampDigits)
	msg := []byte(`{"type":"candidate","to":"` + bID + `","candidate":{` +
		`"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx raddr 192.168.1.7 rport 46154 generation 0 ufrag EsAw network-cost 999",` +
		`"sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"` + zeros + `"}}`)
	at := bytes.Index(msg, benchStampKey) + len(benchStampKey)
	return &benchPair{
		a: a, b: b,
		epoch: time.Now(),
		msg:   msg,
		stamp: msg[at : at+benchStampDigits],
		stop:  []byte(`{"type":"media","audio":false,"video":false}`),
	}
}

// benchResult is what one phase measured.
type benchResult struct {
	sent      int
	elapsed   time.Duration   // from the first send to the last receive
	latencies []time.Duration // per message, when asked for
	cpu       time.Duration   // CPU time of the whole process, clients included
}

func (r benchResult) rate() float64 { return float64(r.sent) / r.elapsed.Seconds() }

// phase sends candidates from a to b while next(i) (i counts from 0) is true,
// then a stop message, and waits until b has received everything.
func (p *benchPair) phase(tb testing.TB, latency bool, next func(i int) bool) benchResult {
	tb.Helper()
	window := make(chan struct{}, benchWindow)
	recv := &benchReceiver{conn: p.b, window: window, epoch: p.epoch, done: make(chan struct{})}
	if latency {
		recv.latencies = make([]time.Duration, 0, 1<<20)
	}
	go recv.run()

	start, cpu0 := time.Now(), benchCPUTime(tb)
	sent := 0
	for ; next(sent); sent++ {
		select {
		case window <- struct{}{}:
		case <-recv.done:
			tb.Fatalf("receiver stopped after %d of %d candidates: %v", recv.count, sent, recv.err)
		}
		benchPutDigits(p.stamp, uint64(time.Since(p.epoch)))
		if err := p.a.WriteMessage(websocket.TextMessage, p.msg); err != nil {
			tb.Fatalf("send candidate %d: %v", sent, err)
		}
	}
	if err := p.a.WriteMessage(websocket.TextMessage, p.stop); err != nil {
		tb.Fatalf("send stop: %v", err)
	}
	<-recv.done // bounded by b's read deadline
	elapsed, cpu := time.Since(start), benchCPUTime(tb)-cpu0
	if recv.err != nil || recv.count != sent {
		tb.Fatalf("received %d of %d candidates: %v", recv.count, sent, recv.err)
	}
	return benchResult{sent: sent, elapsed: elapsed, latencies: recv.latencies, cpu: cpu}
}

// benchCPUTime is the user and system time this process has used.
func benchCPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchReceiver reads b's frames during one phase.
type benchReceiver struct {
	conn   *websocket.Conn
	window chan struct{} // a token is returned for every candidate
	epoch  time.Time

	// Owned by run until done is closed.
	count     int
	latencies []time.Duration // nil: not measured
	err       error
	done      chan struct{}
}

func (r *benchReceiver) run() {
	defer close(r.done)
	buf := make([]byte, 1024)
	for {
		_, rd, err := r.conn.NextReader()
		if err != nil {
			r.err = err
			return
		}
		n, err := io.ReadFull(rd, buf)
		if err != nil && err != io.ErrUnexpectedEOF {
			r.err = err
			return
		}
		frame := buf[:n]
		if bytes.HasPrefix(frame, benchStopPrefix) {
			return
		}
		if !bytes.HasPrefix(frame, benchCandidatePrefix) {
			r.err = fmt.Errorf("unexpected frame %.200s", frame)
			return
		}
		<-r.window
		r.count++
		if r.latencies != nil {
			now := time.Since(r.epoch)
			i := bytes.Index(frame, benchStampKey) + len(benchStampKey)
			if i < len(benchStampKey) || i+benchStampDigits > len(frame) {
				r.err = fmt.Errorf("no timestamp in %.200s", frame)
				return
			}
			r.latencies = append(r.latencies, now-time.Duration(benchParseDigits(frame[i:i+benchStampDigits])))
		}
	}
}

// benchPutDigits writes v in decimal into all of dst, zero-padded.
func benchPutDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = byte('0' + v%10)
		v /= 10
	}
}

func benchParseDigits(src []byte) uint64 {
	var v uint64
	for _, c := range src {
		v = v*10 + uint64(c-'0')
	}
	return v
}

// BenchmarkIdleParticipantMemory measures what an idle participant costs the
// server: heap and goroutine stacks in use, with 2,000 WebSocket clients
// joined to 250 rooms of 8, against the same server before they connected.
// The clients run in a child process (TestBenchIdleClients) so that their
// memory is not counted. Each iteration is one sample (garbage collection,
// then runtime.ReadMemStats); the figures are the mean.
func BenchmarkIdleParticipantMemory(b *testing.B) {
	const rooms, perRoom = 250, 8
	const participants = rooms * perRoom
	benchRaiseFileLimit(b)
	cfg := config.Default()
	srv, wsURL, roomIDs := newBenchServer(b, cfg.Rooms, cfg.Signaling, rooms)

	base := benchMemSample()

	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchIdleClients$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(),
		benchIdleURLEnv+"="+wsURL,
		benchIdleRoomsEnv+"="+strings.Join(roomIDs, ","),
		benchIdlePerRoomEnv+"="+strconv.Itoa(perRoom),
	)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start client process: %v", err)
	}
	exited := make(chan error, 1)
	b.Cleanup(func() {
		stdin.Close() // the child exits when its stdin closes
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})

	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			switch line := sc.Text(); {
			case strings.HasPrefix(line, "ready"):
				ready <- line
			case line != "PASS":
				fmt.Fprintln(os.Stderr, "client process:", line)
			}
		}
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	select {
	case line := <-ready:
		b.Logf("client process: %s", line)
	case err := <-exited:
		exited <- err
		b.Fatalf("client process exited before it was ready: %v", err)
	case <-time.After(90 * time.Second):
		b.Fatal("client process not ready after 90s")
	}
	if st := srv.Stats(); st.Participants != participants {
		b.Fatalf("server has %d participants, want %d", st.Participants, participants)
	}

	var heap, stack float64
	samples := 0
	for b.Loop() {
		m := benchMemSample()
		heap += float64(m.HeapInuse) - float64(base.HeapInuse)
		stack += float64(m.StackInuse) - float64(base.StackInuse)
		samples++
	}
	heap /= float64(samples * participants)
	stack /= float64(samples * participants)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(heap+stack, "B/participant")
	b.ReportMetric(heap, "heap-B/participant")
	b.ReportMetric(stack, "stack-B/participant")
}

func benchMemSample() runtime.MemStats {
	// Two collections: sync.Pool contents survive the first.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// The child process of BenchmarkIdleParticipantMemory reads its task from
// these variables.
const (
	benchIdleURLEnv     = "PARLEY_BENCH_IDLE_URL"
	benchIdleRoomsEnv   = "PARLEY_BENCH_IDLE_ROOMS"
	benchIdlePerRoomEnv = "PARLEY_BENCH_IDLE_PER_ROOM"
)

// TestBenchIdleClients is the client side of BenchmarkIdleParticipantMemory,
// run in a child process; without its environment it does nothing. It joins
// PARLEY_BENCH_IDLE_PER_ROOM clients to each of the rooms, waits until every
// client has heard of everyone in its room, prints "ready", keeps the clients
// connected (answering pings) until its stdin closes, then disconnects them.
func TestBenchIdleClients(t *testing.T) {
	wsURL := os.Getenv(benchIdleURLEnv)
	if wsURL == "" {
		return
	}
	rooms := strings.Split(os.Getenv(benchIdleRoomsEnv), ",")
	perRoom, err := strconv.Atoi(os.Getenv(benchIdlePerRoomEnv))
	if err != nil {
		t.Fatalf("%s: %v", benchIdlePerRoomEnv, err)
	}
	benchRaiseFileLimit(t)

	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 512}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var (
		mu    sync.Mutex
		conns []*websocket.Conn
		errs  []error
	)
	var joined, readers sync.WaitGroup
	defer readers.Wait()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()

	// Rooms are joined in parallel, a few at a time; each room's clients one
	// after the other.
	sem := make(chan struct{}, 16)
	for _, room := range rooms {
		joined.Add(perRoom)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			for range perRoom {
				c, _, err := dialer.DialContext(ctx, wsURL, nil)
				if err == nil {
					err = c.WriteJSON(map[string]string{"type": "join", "room": room})
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					joined.Done()
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
				readers.Add(1)
				go func() {
					defer readers.Done()
					benchIdleClient(c, perRoom, joined.Done)
				}()
			}
		}()
	}
	allJoined := make(chan struct{})
	go func() { joined.Wait(); close(allJoined) }()
	select {
	case <-allJoined:
	case <-ctx.Done():
		t.Fatal("clients not joined within 60s")
	}
	mu.Lock()
	n, failed := len(conns), errors.Join(errs...)
	mu.Unlock()
	if failed != nil {
		t.Fatalf("%d clients connected; failures: %v", n, failed)
	}
	fmt.Printf("ready %d clients in %d rooms\n", n, len(rooms))
	io.Copy(io.Discard, os.Stdin)
}

// benchIdleClient reads c until it closes, calling heardAll once it has its
// joined and a peer-joined for each participant that came after it.
func benchIdleClient(c *websocket.Conn, perRoom int, heardAll func()) {
	var joined struct {
		Type  string            `json:"type"`
		Peers []json.RawMessage `json:"peers"`
	}
	if err := c.ReadJSON(&joined); err != nil || joined.Type != "joined" {
		fmt.Fprintf(os.Stderr, "join: %v %q\n", err, joined.Type)
		heardAll() // the parent sees too few participants and fails
		return
	}
	waiting := perRoom - 1 - len(joined.Peers)
	if waiting == 0 {
		heardAll()
	}
	for {
		if _, _, err := c.NextReader(); err != nil {
			return
		}
		if waiting--; waiting == 0 {
			heardAll()
		}
	}
}

// newBenchServer serves a signaling server on 127.0.0.1 and creates rooms
// through its API. It returns the WebSocket URL and the room ids.
func newBenchServer(tb testing.TB, rooms config.Rooms, sig config.Signaling, nRooms int) (*signaling.Server, string, []string) {
	tb.Helper()
	srv := signaling.New(rooms, sig, nil, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	srv.Register(mux)
	hs := httptest.NewServer(mux)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			tb.Errorf("shutdown: %v", err)
		}
		hs.Close()
	})

	ids := make([]string, nRooms)
	for i := range ids {
		resp, err := hs.Client().Post(hs.URL+"/api/rooms", "application/json", strings.NewReader(`{"mode":"p2p"}`))
		if err != nil {
			tb.Fatal(err)
		}
		var room struct{ ID string }
		err = json.NewDecoder(resp.Body).Decode(&room)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusCreated {
			tb.Fatalf("create room: %s %v", resp.Status, err)
		}
		ids[i] = room.ID
	}
	hs.Client().CloseIdleConnections()
	return srv, "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws", ids
}

func benchDial(tb testing.TB, wsURL string) *websocket.Conn {
	tb.Helper()
	c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		tb.Fatalf("dial %s: %v", wsURL, err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// benchJoin joins c to room and returns its participant id.
func benchJoin(tb testing.TB, c *websocket.Conn, room string) string {
	tb.Helper()
	if err := c.WriteJSON(map[string]string{"type": "join", "room": room}); err != nil {
		tb.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var m struct{ Type, ID string }
	if err := c.ReadJSON(&m); err != nil || m.Type != "joined" {
		tb.Fatalf("join: got %q, %v", m.Type, err)
	}
	return m.ID
}

// benchRaiseFileLimit lifts the soft limit on open files to the hard one.
func benchRaiseFileLimit(tb testing.TB) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			tb.Logf("raise open file limit: %v", err)
		}
	}
}
