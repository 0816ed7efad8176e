package e2e

import (
	"fmt"
	"testing"
	"time"
)

// fill types value into the input labelled label (its exact text).
func fill(p *page, label, value string) {
	p.t.Helper()
	var ok bool
	p.value(fmt.Sprintf(`(() => {
		const label = [...document.querySelectorAll('label')].find(l => l.textContent.trim() === %q);
		const input = label && label.control;
		if (!input || input.offsetParent === null) return false;
		input.value = %q;
		input.dispatchEvent(new Event('input', {bubbles: true}));
		return true;
	})()`, label, value), &ok)
	if !ok {
		p.t.Fatalf("%s: no visible field labelled %q", p.name, label)
	}
}

// statusHas waits until the page's status line contains text.
func statusHas(p *page, text string) {
	p.t.Helper()
	p.waitFor(fmt.Sprintf(`document.getElementById("status").textContent.includes(%q)`, text), 10*time.Second)
}

// TestCreateTokenAndRoomPassword runs a server with --create-token: the
// landing page asks for the token, says when it is wrong, and creates the
// room with a password once it is right; a guest must then give the
// password, is told when it is missing or wrong, and joins with the right
// one on the same page.
func TestCreateTokenAndRoomPassword(t *testing.T) {
	ns, srv := lan(t, "--create-token", "let-me-in")
	b := newBrowser(t, ns)
	alice, bob := b.newPage(t, "alice"), b.newPage(t, "bob")

	alice.navigate(srv.url + "/")
	fill(alice, "Room password (optional)", "open sesame")
	alice.click("New room")
	statusHas(alice, "needs a room-creation token")
	fill(alice, "Room-creation token", "let-me-out")
	alice.click("New room")
	statusHas(alice, "token is not right")
	fill(alice, "Room-creation token", "let-me-in")
	alice.click("New room")
	alice.waitFor(`location.pathname.startsWith("/r/")`, 15*time.Second)
	url := alice.currentURL()
	// The creator's tab knows the password: Join goes straight in.
	join(alice, url, "Alice")

	bob.navigate(url)
	bob.waitFor(`!document.getElementById("password-field").hidden && findButton("Join")`, 20*time.Second)
	bob.click("Join")
	statusHas(bob, "needs a password")
	fill(bob, "Room password", "open says me")
	bob.click("Join")
	statusHas(bob, "Wrong password")
	var state, code string
	bob.value(`window.parley.state`, &state)
	bob.value(`window.parley.lastError.code`, &code)
	if state != "idle" || code != "bad_password" {
		t.Errorf("after a wrong password: state %q, last error %q; want idle and bad_password", state, code)
	}
	fill(bob, "Room password", "open sesame")
	join(bob, url, "Bob")
	expectVideoFrom(alice, "Bob")
	expectVideoFrom(bob, "Alice")

	// The landing page remembers the token.
	alice.navigate(srv.url + "/")
	var token string
	alice.value(`document.getElementById("token-field").hidden ? "" : document.getElementById("create-token").value`, &token)
	if token != "let-me-in" {
		t.Errorf("landing page shows token %q after a reload, want the one that worked", token)
	}
}
