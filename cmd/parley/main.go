// Command parley serves self-hosted video calls: the web client, the signaling
// relay with rooms, and (later) STUN/TURN and an SFU, from one process.
//
// Run it with no arguments to serve on the embedded defaults; `parley --help`
// lists every setting.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/parley-chat/parley/config"
	"github.com/parley-chat/parley/sfu"
	"github.com/parley-chat/parley/signaling"
	"github.com/parley-chat/parley/turn"
	"github.com/parley-chat/parley/web"
)

// shutdownGrace bounds the whole orderly shutdown; the process exits within it.
const shutdownGrace = 4 * time.Second

func main() {
	runSubcommand(os.Args[1:]) // parley version, parley check: exits
	cfg, err := config.Load(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, config.ErrHelp) {
		fmt.Fprint(os.Stderr, commandsHelp)
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(2)
	}
	log := newLogger(cfg.Log, os.Stderr)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	go func() {
		// A second signal exits at once.
		<-ctx.Done()
		stop()
		again := make(chan os.Signal, 1)
		signal.Notify(again, syscall.SIGINT, syscall.SIGTERM)
		<-again
		fmt.Fprintln(os.Stderr, "parley: second signal, exiting now")
		os.Exit(1)
	}()

	if err := run(ctx, cfg, log, os.Stdout); err != nil {
		log.Error("parley stopped", "err", err)
		os.Exit(1)
	}
}

// run opens every listener, serves until ctx ends, then shuts down in layers.
func run(ctx context.Context, cfg config.Config, log *slog.Logger, stdout io.Writer) error {
	// Open every listener before serving anything, so a port in use fails now
	// with its address.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	// Until everything has started, a failure closes what is already open.
	opened := []io.Closer{ln}
	fail := func(err error) error {
		for i := len(opened) - 1; i >= 0; i-- {
			opened[i].Close()
		}
		return err
	}
	metricsLn, err := listenMetrics(cfg) // ops.go
	if err != nil {
		return fail(err)
	}
	if metricsLn != nil {
		opened = append(opened, metricsLn)
	}

	publicIP, err := advertisedIP(cfg, log)
	if err != nil {
		return fail(err)
	}
	// HTTPS: the certificate, the port shared with TURN over TLS, the
	// redirect listener (tls.go).
	var tlsOn *tlsSetup
	var tlsConfig *tls.Config // the separate TURN-over-TLS port's
	if cfg.TLS.Enabled() {
		if tlsOn, err = setupHTTPS(cfg, ln, publicIP, stdout, log); err != nil {
			return fail(err)
		}
		opened = append(opened, tlsOn)
		tlsConfig = tlsOn.turnConf
	}
	sfuListeners, err := sfu.Listen(cfg.SFU, "")
	if err != nil {
		return fail(err)
	}
	opened = append(opened, sfuListeners)
	var turnSrv *turn.Server
	if cfg.TURN.Enabled {
		ls, err := turn.Listen(cfg.TURN, tlsConfig != nil)
		if err != nil {
			return fail(err)
		}
		if tlsOn != nil {
			ls.SharedTLS = tlsOn.turnListener() // TURN over TLS on the HTTPS port
		}
		// Relays may always reach the SFU's media port.
		sfuPort := uint16(sfuListeners.UDPAddr().(*net.UDPAddr).Port)
		turnSrv, err = turn.New(cfg.TURN, ls, turn.Options{
			PublicIPs:      []netip.Addr{publicIP},
			TLSConfig:      tlsConfig,
			AllowPeerAddrs: []netip.AddrPort{netip.AddrPortFrom(publicIP, sfuPort)},
		}, log.With("part", "turn"))
		if err != nil {
			return fail(fmt.Errorf("start TURN: %w", err))
		}
		defer turnSrv.Close() // last: after HTTP, the WebSockets and the SFU
	}
	var tlsHost string
	if tlsOn != nil {
		tlsHost = tlsOn.turnsHost
	}
	ice := turn.NewProvider(cfg.TURN, turnSrv, tlsHost)

	media, err := sfu.New(sfuListeners, sfu.Options{PublicIP: publicIP.String()}, log.With("part", "sfu"))
	if err != nil {
		return fail(fmt.Errorf("start SFU: %w", err))
	}
	defer media.Close() // after the WebSockets, before TURN

	sig := signaling.New(cfg.Rooms, cfg.Signaling, iceAdapter(ice), log.With("part", "signaling"))
	sig.EnableSFU(mediaServer{media})
	mux := http.NewServeMux()
	sig.Register(mux)
	sig.SetAdmission(cfg.Admission)
	ops := newOps(cfg, metricsLn, sig, turnSrv, media, log.With("part", "ops"))
	ops.mount(mux) // /metrics, /readyz
	site := web.Handler()
	mux.Handle("GET /", site)

	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	serveLn, scheme, openAddr := ln, "http", browseAddr(ln.Addr())
	if tlsOn != nil {
		serveLn, scheme, openAddr = tlsOn.httpListener(), "https", tlsOn.browseAddr(ln.Addr())
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(serveLn) }()
	if tlsOn != nil {
		tlsOn.start(ctx)
	}

	ops.start() // /readyz says ready from here on
	log.Info("listening", "addr", ln.Addr().String(), "tls", tlsOn != nil)
	fmt.Fprintf(stdout, "Parley is running. Open %s://%s/ in your browser.\n", scheme, openAddr)

	select {
	case err := <-serveErr:
		sig.Close()
		ops.close()
		if tlsOn != nil {
			tlsOn.Close()
		}
		return fmt.Errorf("serve http: %w", err)
	case <-ctx.Done():
	}

	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	ops.shutdown(sctx) // /readyz fails from now on
	// Stop accepting and finish plain HTTP requests; WebSockets are hijacked
	// connections that http.Server no longer tracks, so signaling closes them.
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("http shutdown", "err", err)
	}
	if tlsOn != nil {
		tlsOn.shutdown(sctx)
	}
	if err := sig.Shutdown(sctx); err != nil {
		log.Warn("signaling shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}

// advertisedIP is the address clients are told to reach: --public-ip, or the
// address of the interface that carries the default route.
func advertisedIP(cfg config.Config, log *slog.Logger) (netip.Addr, error) {
	if cfg.PublicIP != "" {
		return netip.MustParseAddr(cfg.PublicIP), nil // validated by config
	}
	ip, err := turn.DetectPublicIP()
	if err != nil {
		log.Warn("cannot detect the public address; clients elsewhere will not reach TURN or SFU media; set --public-ip", "err", err)
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
	}
	if ip.IsPrivate() || ip.IsLoopback() {
		log.Info("advertising a private address; set --public-ip for an internet install", "public_ip", ip)
	}
	return ip, nil
}

// iceAdapter hands the TURN provider's servers to signaling.
func iceAdapter(p *turn.Provider) signaling.ICEProvider {
	return signaling.ICEProviderFunc(func(id string) []signaling.ICEServer {
		servers := p.ICEServers(id)
		out := make([]signaling.ICEServer, len(servers))
		for i, s := range servers {
			out[i] = signaling.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential}
		}
		return out
	})
}

// browseAddr turns a listen address into one a browser on this machine can open.
func browseAddr(a net.Addr) string {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a.String()
	}
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		return fmt.Sprintf("localhost:%d", tcp.Port)
	}
	return tcp.String()
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
