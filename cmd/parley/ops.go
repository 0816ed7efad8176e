package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/stun/v4"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/metrics"
	"github.com/parley-chat/parley/sfu"
	"github.com/parley-chat/parley/signaling"
	"github.com/parley-chat/parley/turn"
)

const (
	// turnProbeTimeout bounds the STUN request /readyz sends to the TURN
	// listener.
	turnProbeTimeout = time.Second
	// turnProbeCache is how long a probe's result answers /readyz, so that
	// a busy prober does not turn into a stream of STUN requests.
	turnProbeCache = 2 * time.Second
)

// ops serves what an operator looks at: /metrics and /readyz. They go on
// the main listener, or on their own (plain HTTP) listener with
// --metrics-listen, which then also answers /healthz.
type ops struct {
	// Static after newOps.
	log      *slog.Logger
	metrics  http.Handler
	tokenSet bool
	ln       net.Listener // nil: served on the main mux
	srv      *http.Server // nil without ln
	// serveDone is closed when srv's Serve has returned (at once without srv).
	serveDone chan struct{}

	ready    atomic.Bool // set by start, cleared by shutdown
	stopping atomic.Bool // set by shutdown

	// Owned by the goroutine that calls start, shutdown and close.
	started bool
	hup     chan os.Signal // SIGHUP, caught from start to shutdown
	hupDone chan struct{}

	probeMu   sync.Mutex
	turnProbe string    // guarded by probeMu; UDP address of the TURN listener, "" without TURN
	probedAt  time.Time // guarded by probeMu
	probeErr  error     // guarded by probeMu
}

// listenMetrics opens --metrics-listen; nil when /metrics goes on the main
// listener.
func listenMetrics(cfg config.Config) (net.Listener, error) {
	if cfg.Metrics.Listen == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Metrics.Listen)
	if err != nil {
		return nil, fmt.Errorf("metrics listen on %s: %w", cfg.Metrics.Listen, err)
	}
	return ln, nil
}

// newOps builds the metrics of sig, turnSrv and media (either may be nil)
// and the readiness check. ln is from listenMetrics.
func newOps(cfg config.Config, ln net.Listener, sig *signaling.Server, turnSrv *turn.Server, media *sfu.SFU, log *slog.Logger) *ops {
	src := metrics.Sources{Signaling: sig}
	if turnSrv != nil {
		src.TURN = turnSrv
	}
	if media != nil {
		src.SFU = media
	}
	o := &ops{
		log:       log,
		metrics:   metrics.Handler(metrics.New(src, buildInfo()), cfg.Metrics.Token, log),
		tokenSet:  cfg.Metrics.Token != "",
		ln:        ln,
		serveDone: make(chan struct{}),
	}
	if turnSrv != nil {
		o.turnProbe = probeAddr(cfg.TURN.Listen, turnSrv.Endpoint().Port)
	}
	if ln != nil {
		mux := http.NewServeMux()
		o.register(mux)
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok\n")
		})
		o.srv = &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	return o
}

// register mounts /metrics and /readyz on mux.
func (o *ops) register(mux *http.ServeMux) {
	mux.Handle("GET /metrics", o.metrics)
	mux.HandleFunc("GET /readyz", o.handleReady)
}

// mount puts /metrics and /readyz on the main mux, unless they have a
// listener of their own (where /readyz is served too).
func (o *ops) mount(mux *http.ServeMux) {
	if o.ln == nil {
		o.register(mux)
		return
	}
	mux.HandleFunc("GET /readyz", o.handleReady)
}

// start serves the metrics listener, if any, and declares the server ready:
// call it once every listener is serving.
func (o *ops) start() {
	o.started = true
	if o.srv != nil {
		go func() {
			defer close(o.serveDone)
			if err := o.srv.Serve(o.ln); !errors.Is(err, http.ErrServerClosed) {
				o.log.Error("metrics listener stopped", "addr", o.ln.Addr().String(), "err", err)
			}
		}()
		o.log.Info("serving /metrics", "addr", o.ln.Addr().String(), "token", o.tokenSet)
	} else {
		close(o.serveDone)
	}
	// SIGHUP reloads the certificate files when there are some (tls.go);
	// without them it must still not end the process, as its default
	// action would: `systemctl reload` sends it.
	o.hup, o.hupDone = make(chan os.Signal, 1), make(chan struct{})
	signal.Notify(o.hup, syscall.SIGHUP)
	go func() {
		defer close(o.hupDone)
		for range o.hup {
			o.log.Debug("SIGHUP received")
		}
	}()
	o.ready.Store(true)
}

// stopHUP stops catching SIGHUP.
func (o *ops) stopHUP() {
	if o.hup == nil {
		return // not started, or stopped already
	}
	signal.Stop(o.hup)
	close(o.hup)
	<-o.hupDone
	o.hup = nil
}

// shutdown makes /readyz fail from now on and stops the metrics listener.
func (o *ops) shutdown(ctx context.Context) {
	o.stopping.Store(true)
	o.ready.Store(false)
	o.stopHUP()
	if o.srv == nil {
		return
	}
	if !o.started {
		o.ln.Close()
		return
	}
	if err := o.srv.Shutdown(ctx); err != nil {
		o.log.Warn("metrics shutdown", "err", err)
	}
	select {
	case <-o.serveDone:
	case <-ctx.Done():
	}
}

// close stops the metrics listener at once, for a server that failed.
func (o *ops) close() {
	o.stopping.Store(true)
	o.stopHUP()
	if o.srv != nil {
		o.srv.Close()
		o.ln.Close() // in case it was never served
	}
}

// handleReady answers 200 when every listener is serving and TURN (when it
// runs) answers a STUN request, else 503 with the reason.
func (o *ops) handleReady(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	reason := ""
	switch {
	case o.stopping.Load():
		reason = "shutting down"
	case !o.ready.Load():
		reason = "starting: listeners not serving yet"
	default:
		if err := o.checkTURN(); err != nil {
			reason = "turn: " + err.Error()
		}
	}
	if reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "not ready: "+reason+"\n")
		return
	}
	io.WriteString(w, "ready\n")
}

// checkTURN sends a STUN Binding request to the TURN listener and waits for
// the answer, at most once per turnProbeCache.
func (o *ops) checkTURN() error {
	o.probeMu.Lock()
	defer o.probeMu.Unlock()
	if o.turnProbe == "" {
		return nil
	}
	if time.Since(o.probedAt) < turnProbeCache {
		return o.probeErr
	}
	o.probeErr = stunBinding(o.turnProbe, turnProbeTimeout)
	o.probedAt = time.Now()
	return o.probeErr
}

// probeAddr is where this host reaches a server listening on listen (whose
// port is port): the listen host, or loopback for an unspecified one.
func probeAddr(listen string, port int) string {
	host, _, _ := net.SplitHostPort(listen)
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// stunBinding sends one STUN Binding request over UDP to addr and checks the
// success response.
func stunBinding(addr string, timeout time.Duration) error {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(req.Raw); err != nil {
		return fmt.Errorf("STUN request to %s: %w", addr, err)
	}
	buf := make([]byte, 1500)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			return fmt.Errorf("no STUN answer from %s: %w", addr, err)
		}
		res := &stun.Message{Raw: buf[:n]}
		if res.Decode() != nil || res.TransactionID != req.TransactionID {
			continue // not the answer to our request
		}
		if res.Type != stun.BindingSuccess {
			return fmt.Errorf("STUN request to %s answered with %s", addr, res.Type)
		}
		var xor stun.XORMappedAddress
		if err := xor.GetFrom(res); err != nil {
			return fmt.Errorf("STUN answer from %s without an address: %w", addr, err)
		}
		return nil
	}
}
