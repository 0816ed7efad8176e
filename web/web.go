// Package web serves Parley's browser client: the landing page, the room page
// and their static assets, all embedded in the binary.
//
// The client is plain HTML, CSS and ES modules under static/, with no build
// step and no request to any host but the one that served the page. The
// handler knows nothing of WebSockets or rooms; it only serves files and the
// security headers that go with them.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var embedded embed.FS

// asset is one embedded file, read once when the handler is built.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// Handler returns the HTTP handler for the browser client. It serves
//
//	GET /            the landing page
//	GET /r/{id}      the room page (the same file for every id; the page reads it)
//	GET /static/...  the embedded assets
//
// and 404 for anything else it is given. Every response carries a strict
// Content-Security-Policy that allows only the requesting host, plus
// nosniff, no-referrer (a room id in a Referer would let a third party in)
// and a Permissions-Policy limited to camera, microphone and screen capture
// on this origin. The caller mounts it for "/", "/r/" and "/static/"; the
// signaling server owns /ws, /api and /healthz.
func Handler() http.Handler {
	assets, err := loadAssets(embedded)
	if err != nil {
		// The files are compiled into the binary; failing to read them
		// is a broken build, not a runtime condition.
		panic("web: read embedded assets: " + err.Error())
	}
	index, room := assets["index.html"], assets["room.html"]
	if index == nil || room == nil {
		panic("web: index.html or room.html missing from static/")
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, index)
	})
	mux.HandleFunc("GET /r/{id}", func(w http.ResponseWriter, r *http.Request) {
		serveAsset(w, r, room)
	})
	mux.HandleFunc("GET /static/{file...}", func(w http.ResponseWriter, r *http.Request) {
		a := assets[r.PathValue("file")]
		if a == nil {
			http.NotFound(w, r)
			return
		}
		serveAsset(w, r, a)
	})
	mux.HandleFunc("/", http.NotFound)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setSecurityHeaders(w.Header(), r.Host)
		mux.ServeHTTP(w, r)
	})
}

// contentType returns the Content-Type of an embedded file. The types of
// the files the client is made of are fixed here so that they do not depend
// on the host's mime.types (which may call JavaScript something else).
func contentType(name string) string {
	switch ext := path.Ext(name); ext {
	case ".html":
		return "text/html; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	default:
		if t := mime.TypeByExtension(ext); t != "" {
			return t
		}
		return "application/octet-stream"
	}
}

// loadAssets reads every regular file under static/ into memory, keyed by
// its path relative to static/ (for example "js/room.js" or "room.html").
func loadAssets(fsys fs.FS) (map[string]*asset, error) {
	sub, err := fs.Sub(fsys, "static")
	if err != nil {
		return nil, err
	}
	assets := make(map[string]*asset)
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		assets[name] = &asset{
			body:        body,
			contentType: contentType(name),
			etag:        `"` + hex.EncodeToString(sum[:16]) + `"`,
		}
		return nil
	})
	return assets, err
}

// serveAsset writes a, answering conditional requests from its ETag so that
// "no-cache" costs a round trip but no body when nothing changed.
func serveAsset(w http.ResponseWriter, r *http.Request, a *asset) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// setSecurityHeaders sets the headers every response of the client carries.
// host is the request's Host, used to allow the signaling WebSocket on the
// same host; a Host that is not a plain host[:port] is left out, so the
// policy can never be widened or broken by what a client sends.
func setSecurityHeaders(h http.Header, host string) {
	connect := "connect-src 'self'"
	if validHost(host) {
		connect += " ws://" + host + " wss://" + host
	}
	h.Set("Content-Security-Policy", strings.Join([]string{
		"default-src 'self'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data:",
		"media-src 'self' blob: mediastream:",
		connect,
		"frame-ancestors 'none'",
		"base-uri 'none'",
		"form-action 'self'",
	}, "; "))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Permissions-Policy", "camera=(self), microphone=(self), display-capture=(self)")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// validHost reports whether host is a hostname, IPv4 or bracketed IPv6
// address with an optional port, made only of characters that cannot end a
// CSP source expression or directive.
func validHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range host {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']':
		default:
			return false
		}
	}
	return true
}
