package web

import (
	"bytes"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path"
	"regexp"
	"strings"
	"testing"
)

// newServer starts the handler on a real loopback server.
func newServer(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	return srv
}

// get fetches path from srv and returns the response with its body read.
func get(t *testing.T, srv *httptest.Server, p string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+p, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", p, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", p, err)
	}
	return resp, string(body)
}

func TestLandingPage(t *testing.T) {
	srv := newServer(t)
	resp, body := get(t, srv, "/", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: status %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /: Content-Type %q, want text/html", ct)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`<button[^>]*>New room</button>`),
		regexp.MustCompile(`<label for="room-input">Room link or ID</label>`),
		regexp.MustCompile(`<button[^>]*>Go</button>`),
		regexp.MustCompile(`<script type="module" src="/static/landing.js">`),
	} {
		if !want.MatchString(body) {
			t.Errorf("GET /: body does not match %s", want)
		}
	}
}

func TestRoomPage(t *testing.T) {
	srv := newServer(t)
	var first string
	for _, id := range []string{"anything", "AbC_-123", "x"} {
		resp, body := get(t, srv, "/r/"+id, nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /r/%s: status %d", id, resp.StatusCode)
		}
		if !strings.Contains(body, `<script type="module" src="/static/room.js">`) ||
			!regexp.MustCompile(`<button[^>]*>Join</button>`).MatchString(body) {
			t.Errorf("GET /r/%s: not the room page", id)
		}
		if first == "" {
			first = body
		} else if body != first {
			t.Errorf("GET /r/%s: body differs from another room's", id)
		}
	}
}

// TestAdmissionFields checks the fields of the optional room password and
// room-creation token: labelled, of type password, and the ones shown only
// when needed hidden at first.
func TestAdmissionFields(t *testing.T) {
	srv := newServer(t)
	for _, tc := range []struct {
		page, id, label, hiddenWrapper string
	}{
		{"/", "room-password", "Room password (optional)", ""},
		{"/", "create-token", "Room-creation token", "token-field"},
		{"/r/x", "password", "Room password", "password-field"},
	} {
		_, body := get(t, srv, tc.page, nil)
		if !regexp.MustCompile(`<label for="` + tc.id + `">` + regexp.QuoteMeta(tc.label) + `</label>`).MatchString(body) {
			t.Errorf("%s: no label %q for #%s", tc.page, tc.label, tc.id)
		}
		if !regexp.MustCompile(`<input id="` + tc.id + `"[^>]*type="password"`).MatchString(body) {
			t.Errorf("%s: #%s is not a password input", tc.page, tc.id)
		}
		if tc.hiddenWrapper != "" && !regexp.MustCompile(`id="`+tc.hiddenWrapper+`"[^>]*\shidden[\s>]`).MatchString(body) {
			t.Errorf("%s: #%s is not hidden until needed", tc.page, tc.hiddenWrapper)
		}
	}
	for file, wants := range map[string][]string{
		"landing.js": {"create_token_required", "bad_create_token", "parley.createToken"},
		"api.js":     {"Authorization: `Bearer ${token}`"},
		"room.js":    {"password_required", "bad_password", "msg.password"},
	} {
		text := string(mustRead(t, file))
		for _, want := range wants {
			if !strings.Contains(text, want) {
				t.Errorf("%s does not handle %q", file, want)
			}
		}
	}
}

func TestAssetContentTypes(t *testing.T) {
	srv := newServer(t)
	want := map[string]string{
		".js":   "text/javascript",
		".css":  "text/css",
		".html": "text/html",
		".svg":  "image/svg+xml",
	}
	for _, name := range embeddedFiles(t) {
		prefix, ok := want[path.Ext(name)]
		if !ok {
			t.Errorf("%s: no expected type for this extension; add one", name)
			continue
		}
		resp, body := get(t, srv, "/static/"+name, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /static/%s: status %d", name, resp.StatusCode)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, prefix) {
			t.Errorf("GET /static/%s: Content-Type %q, want %s", name, ct, prefix)
		}
		if body != string(mustRead(t, name)) {
			t.Errorf("GET /static/%s: body differs from the embedded file", name)
		}
	}
}

func TestConditionalGet(t *testing.T) {
	srv := newServer(t)
	resp, _ := get(t, srv, "/static/room.js", nil)
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("Cache-Control %q, want no-cache", cc)
	}
	resp, body := get(t, srv, "/static/room.js", http.Header{"If-None-Match": {etag}})
	if resp.StatusCode != http.StatusNotModified || body != "" {
		t.Errorf("If-None-Match: status %d, %d bytes; want 304 and no body", resp.StatusCode, len(body))
	}
}

func TestNotFound(t *testing.T) {
	srv := newServer(t)
	for _, p := range []string{
		"/nope",
		"/index.html",
		"/room.html",
		"/r",
		"/r/",
		"/r/a/b",
		"/static",
		"/static/",
		"/static/nope.js",
		"/static/../web.go",
		"/static/%2e%2e/web.go",
		"/ws", // the signaling server's, not ours
		"/api/rooms",
	} {
		t.Run(p, func(t *testing.T) {
			resp, _ := get(t, srv, p, nil)
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s: status %d, want 404", p, resp.StatusCode)
			}
			if resp.Header.Get("Content-Security-Policy") == "" {
				t.Errorf("GET %s: no Content-Security-Policy on the 404", p)
			}
		})
	}
}

func TestSecurityHeaders(t *testing.T) {
	srv := newServer(t)
	host := strings.TrimPrefix(srv.URL, "http://")
	allowed := map[string]bool{
		"'self'": true, "'none'": true, "data:": true, "blob:": true, "mediastream:": true,
		"ws://" + host: true, "wss://" + host: true,
	}
	for _, p := range []string{"/", "/r/anything", "/static/room.js", "/static/style.css"} {
		t.Run(p, func(t *testing.T) {
			resp, _ := get(t, srv, p, nil)
			csp := resp.Header.Get("Content-Security-Policy")
			directives := map[string][]string{}
			for _, d := range strings.Split(csp, ";") {
				f := strings.Fields(d)
				if len(f) == 0 {
					continue
				}
				directives[f[0]] = f[1:]
				for _, src := range f[1:] {
					if !allowed[src] {
						t.Errorf("CSP %s allows %q, not this server", f[0], src)
					}
				}
			}
			for name, want := range map[string]string{
				"default-src":     "'self'",
				"script-src":      "'self'",
				"style-src":       "'self'",
				"img-src":         "'self' data:",
				"media-src":       "'self' blob: mediastream:",
				"connect-src":     "'self' ws://" + host + " wss://" + host,
				"frame-ancestors": "'none'",
				"base-uri":        "'none'",
			} {
				if got := strings.Join(directives[name], " "); got != want {
					t.Errorf("CSP %s = %q, want %q", name, got, want)
				}
			}
			for name, want := range map[string]string{
				"X-Content-Type-Options": "nosniff",
				"Referrer-Policy":        "no-referrer",
				"Permissions-Policy":     "camera=(self), microphone=(self), display-capture=(self)",
			} {
				if got := resp.Header.Get(name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

func TestCSPIgnoresOddHost(t *testing.T) {
	for _, host := range []string{"", "a b", "evil; script-src *", "x'", "h\"", "é.example"} {
		h := http.Header{}
		setSecurityHeaders(h, host)
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "connect-src 'self';") {
			t.Errorf("host %q: CSP %q, want connect-src 'self' alone", host, csp)
		}
	}
	for _, host := range []string{"localhost:8080", "[::1]:8080", "parley.example.org", "10.0.0.1"} {
		if !validHost(host) {
			t.Errorf("validHost(%q) = false, want true", host)
		}
	}
}

// TestNoThirdPartyHosts scans every embedded file for addresses of other
// hosts (ICE servers, CDNs, fonts, analytics) and for APIs that are
// deprecated, vendor-prefixed or leak objects.
func TestNoThirdPartyHosts(t *testing.T) {
	// The SVG namespace is a name, not a request.
	harmless := regexp.MustCompile(`http://www\.w3\.org/2000/svg`)
	forbidden := []struct {
		what string
		re   *regexp.Regexp
	}{
		{"STUN/TURN URL", regexp.MustCompile(`(?i)\b(stuns?|turns?):[^\s'"]`)},
		{"http(s) URL", regexp.MustCompile(`(?i)https?://[^\s'"<>)]+`)},
		{"protocol-relative URL", regexp.MustCompile(`(?i)(src|href|from|import)\s*=?\s*\(?\s*["']//`)},
		{"CSS import of a URL", regexp.MustCompile(`(?i)@import\s+url\(\s*["']?[a-z]+:`)},
		{"createObjectURL", regexp.MustCompile(`createObjectURL\(`)},
		{"webkitRTCPeerConnection", regexp.MustCompile(`webkitRTCPeerConnection`)},
		{"mozRTCPeerConnection", regexp.MustCompile(`mozRTCPeerConnection`)},
		{"navigator.getUserMedia", regexp.MustCompile(`navigator\.(webkit|moz)?[gG]etUserMedia`)},
	}
	for _, name := range embeddedFiles(t) {
		text := harmless.ReplaceAllString(string(mustRead(t, name)), "")
		for _, f := range forbidden {
			for _, m := range f.re.FindAllString(text, -1) {
				t.Errorf("%s: %s %q", name, f.what, m)
			}
		}
	}
}

// TestNoInlineCode checks that the HTML has nothing the CSP would block:
// inline scripts, inline styles, event handler attributes.
func TestNoInlineCode(t *testing.T) {
	checks := []struct {
		what string
		re   *regexp.Regexp
	}{
		{"inline script", regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]`)},
		{"script without src", regexp.MustCompile(`(?i)<script(\s+(type|defer|async)(="[^"]*")?)*\s*>`)},
		{"style element", regexp.MustCompile(`(?i)<style[\s>]`)},
		{"style attribute", regexp.MustCompile(`(?i)\sstyle\s*=`)},
		{"event handler attribute", regexp.MustCompile(`(?i)\son[a-z]+\s*=`)},
		{"javascript: URL", regexp.MustCompile(`(?i)javascript:`)},
	}
	for _, name := range embeddedFiles(t) {
		if path.Ext(name) != ".html" {
			continue
		}
		text := string(mustRead(t, name))
		for _, c := range checks {
			if m := c.re.FindString(text); m != "" {
				t.Errorf("%s: %s: %q", name, c.what, m)
			}
		}
	}
}

// TestReferencesResolve checks that every module import and every asset
// referenced from HTML is an embedded file.
func TestReferencesResolve(t *testing.T) {
	imports := regexp.MustCompile(`(?m)^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'`)
	refs := regexp.MustCompile(`(?:src|href)="(/static/[^"]+)"`)
	files := map[string]bool{}
	for _, name := range embeddedFiles(t) {
		files[name] = true
	}
	for name := range files {
		text := string(mustRead(t, name))
		for _, m := range imports.FindAllStringSubmatch(text, -1) {
			if !strings.HasPrefix(m[1], "./") {
				t.Errorf("%s: import %q: only relative imports of our own modules", name, m[1])
				continue
			}
			if target := path.Join(path.Dir(name), m[1]); !files[target] {
				t.Errorf("%s: import %q: no such embedded file", name, m[1])
			}
		}
		for _, m := range refs.FindAllStringSubmatch(text, -1) {
			if !files[strings.TrimPrefix(m[1], "/static/")] {
				t.Errorf("%s: reference %q: no such embedded file", name, m[1])
			}
		}
	}
}

// TestJavaScriptSyntax parses every module with node, when node is installed.
func TestJavaScriptSyntax(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is not installed (CI never skips; make test installs it)")
		}
		t.Skip("node not installed")
	}
	for _, name := range embeddedFiles(t) {
		if path.Ext(name) != ".js" {
			continue
		}
		cmd := exec.Command(node, "--input-type=module", "--check")
		cmd.Stdin = bytes.NewReader(mustRead(t, name))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
}

func TestRoomLinkPathIsEscaped(t *testing.T) {
	// A room id is in the path; a request for an encoded one still gets the page.
	srv := newServer(t)
	resp, _ := get(t, srv, "/r/"+url.PathEscape("a b"), nil)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
}

// embeddedFiles lists the files under static/, relative to it.
func embeddedFiles(t *testing.T) []string {
	t.Helper()
	var names []string
	err := fs.WalkDir(embedded, "static", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			names = append(names, strings.TrimPrefix(p, "static/"))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatal("no embedded files")
	}
	return names
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(embedded, "static/"+name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
