package turn

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST scheme specifies.
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	pionturn "github.com/pion/turn/v5"
)

// maxParticipantIDLen bounds the participant part of a username. Ours are far
// shorter; the bound keeps quota keys and log lines small.
const maxParticipantIDLen = 256

// Credentials returns TURN credentials in the TURN REST scheme (coturn's
// use-auth-secret): the username is "<unix-expiry>:<id>", the password is
// base64(HMAC-SHA1(secret, username)). They are valid until now+ttl.
func Credentials(secret, id string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10) + ":" + id
	return username, restPassword(secret, username)
}

// restPassword is the password of username under secret.
func restPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username)) // hash.Hash writes never fail
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseUsername splits a REST username "<unix-expiry>:<id>" as sent by a
// client. It refuses anything else: a missing or empty id, an expiry that is
// not a plain decimal number, an id longer than maxParticipantIDLen.
func parseUsername(username string) (expiry int64, id string, ok bool) {
	ts, id, found := strings.Cut(username, ":")
	if !found || id == "" || len(id) > maxParticipantIDLen || ts == "" || len(ts) > 19 {
		return 0, "", false
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return 0, "", false // also refuses the signs ParseInt would accept
		}
	}
	expiry, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return 0, "", false
	}
	return expiry, id, true
}

// authRefusal says why a username was refused; it is logged, never sent.
type authRefusal string

const (
	refusedMalformed authRefusal = "malformed username"
	refusedExpired   authRefusal = "expired username"
)

// restAuth checks REST usernames against one secret. Static after
// construction.
type restAuth struct {
	secret string
	now    func() time.Time
}

// key returns the long-term credential key (MD5 of username:realm:password)
// for username, and the participant id that the quota and the accounting use
// as the user. The password itself is checked by pion through the key: a
// forged or wrong password fails MESSAGE-INTEGRITY.
func (a *restAuth) key(username, realm string) (userID string, key []byte, refusal authRefusal) {
	expiry, id, ok := parseUsername(username)
	if !ok {
		return "", nil, refusedMalformed
	}
	if a.now().Unix() > expiry {
		return "", nil, refusedExpired
	}
	return id, pionturn.GenerateAuthKey(username, realm, restPassword(a.secret, username)), ""
}

// randomSecret returns a fresh secret for a process that was given none.
func randomSecret() string {
	return rand.Text() // 26 base32 characters, 130 bits from crypto/rand
}
