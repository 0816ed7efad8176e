package main

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestAdmissionWired checks that run hands the admission settings to
// signaling: the room-creation token and the WebSocket limit per client.
func TestAdmissionWired(t *testing.T) {
	cfg := testConfig(t)
	cfg.Admission.CreateToken = "let-me-in"
	cfg.Admission.ConnectionsPerClient = 1
	ctx, cancel := context.WithCancel(context.Background())
	base, done := startRun(t, ctx, cfg)
	defer func() {
		cancel()
		<-done
	}()

	for token, want := range map[string]int{"": http.StatusUnauthorized, "nope": http.StatusForbidden, "let-me-in": http.StatusCreated} {
		req, _ := http.NewRequest("POST", base+"/api/rooms", strings.NewReader(`{"password":"pw"}`))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("POST /api/rooms with token %q = %d, want %d", token, resp.StatusCode, want)
		}
	}

	ws := "ws" + strings.TrimPrefix(base, "http") + "/ws"
	first, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, resp, err := websocket.DefaultDialer.Dial(ws, nil)
	if err == nil {
		second.Close()
		t.Fatal("a second WebSocket from one address was accepted with connections_per_client 1")
	}
	if resp == nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Errorf("second WebSocket: %v %v, want 429", resp, err)
	}
}
