package signaling

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/parley-chat/parley/config"
)

// maxBadPasswords is how many wrong room passwords one connection may send
// before it is closed: enough for typos, too few to guess with.
const maxBadPasswords = 10

// admission decides who may create rooms and how much one client address
// may hold. The zero value admits everyone without limits.
type admission struct {
	// Static after SetAdmission.
	tokenSum       [sha256.Size]byte // SHA-256 of the room-creation token
	tokenSet       bool
	roomsPerHour   int // 0: no limit
	connsPerClient int // 0: no limit

	mu      sync.Mutex
	conns   map[string]int           // guarded by mu; open WebSockets by client key
	creates map[string]*rate.Limiter // guarded by mu; room creation by client key
}

// SetAdmission sets the room-creation token and the limits per client
// address. Call it before the server handles its first request. A Server
// without it lets anyone create rooms, without limits.
//
// The client address is the connection's remote address: behind a reverse
// proxy every client has the proxy's address, and the limits apply to all of
// them together. IPv6 clients are counted by their /64, which one host
// usually has whole.
func (s *Server) SetAdmission(a config.Admission) {
	s.adm.tokenSet = a.CreateToken != ""
	s.adm.tokenSum = sha256.Sum256([]byte(a.CreateToken))
	s.adm.roomsPerHour = max(a.RoomsPerClient, 0)
	s.adm.connsPerClient = max(a.ConnectionsPerClient, 0)
}

// checkCreateToken returns "" when the request may create a room, else the
// error code to refuse it with. The token is taken from an "Authorization:
// Bearer" header or, failing that, from the body's "token".
func (a *admission) checkCreateToken(r *http.Request, bodyToken string) string {
	if !a.tokenSet {
		return ""
	}
	token := bodyToken
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, value, _ := strings.Cut(h, " ")
		if strings.EqualFold(scheme, "Bearer") {
			token = strings.TrimSpace(value)
		}
	}
	if token == "" {
		return CodeCreateTokenRequired
	}
	// Comparing digests keeps the time independent of where the strings
	// differ and of the token's length.
	sum := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(sum[:], a.tokenSum[:]) != 1 {
		return CodeBadCreateToken
	}
	return ""
}

// allowRoom counts a room creation by key at now. When the client has
// created its rooms for the hour it returns false and how long until it may
// create the next.
func (a *admission) allowRoom(key string, now time.Time) (bool, time.Duration) {
	if a.roomsPerHour == 0 {
		return true, 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	lim := a.creates[key]
	if lim == nil {
		if a.creates == nil {
			a.creates = make(map[string]*rate.Limiter)
		}
		lim = rate.NewLimiter(rate.Every(time.Hour/time.Duration(a.roomsPerHour)), a.roomsPerHour)
		a.creates[key] = lim
	}
	res := lim.ReserveN(now, 1)
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// acquireConn reserves a WebSocket for key; false when the client holds its
// limit already. Every true must be followed by releaseConn.
func (a *admission) acquireConn(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conns == nil {
		a.conns = make(map[string]int)
	}
	if a.connsPerClient > 0 && a.conns[key] >= a.connsPerClient {
		return false
	}
	a.conns[key]++
	return true
}

func (a *admission) releaseConn(key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.conns[key]--; a.conns[key] <= 0 {
		delete(a.conns, key)
	}
}

// forget drops the room-creation state of clients that are back to their
// full allowance, so that the map holds only recent creators.
func (a *admission) forget(now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, lim := range a.creates {
		if lim.TokensAt(now) >= float64(lim.Burst()) {
			delete(a.creates, k)
		}
	}
}

// clientKey is the address the per-client limits count by: the IP of
// remoteAddr, or its /64 for IPv6. An address that does not parse (not an
// IP connection) is its own key.
func clientKey(remoteAddr string) string {
	ap, err := netip.ParseAddrPort(remoteAddr)
	if err != nil {
		return remoteAddr
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.String()
	}
	return ip.String()
}

// roomPassword is the stored form of a room's password: HMAC-SHA256 under a
// random per-room salt. It only ever lives in memory with the room. A slow
// password hash (argon2id) would protect better against someone who reads
// the server's memory, who could then read the room id too; it would also
// hand every client a way to make the server burn CPU with join attempts.
type roomPassword struct {
	salt [16]byte
	sum  [sha256.Size]byte
}

// newRoomPassword returns the stored form of pw, or nil for no password.
func newRoomPassword(pw string) *roomPassword {
	if pw == "" {
		return nil
	}
	p := &roomPassword{}
	rand.Read(p.salt[:]) // never fails (crypto/rand documents it)
	p.sum = p.hash(pw)
	return p
}

func (p *roomPassword) hash(pw string) [sha256.Size]byte {
	mac := hmac.New(sha256.New, p.salt[:])
	mac.Write([]byte(pw)) // hash.Hash writes never fail
	var sum [sha256.Size]byte
	mac.Sum(sum[:0])
	return sum
}

// matches reports, in constant time, whether pw is the password.
func (p *roomPassword) matches(pw string) bool {
	sum := p.hash(pw)
	return hmac.Equal(sum[:], p.sum[:])
}
