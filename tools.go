//go:build tools

package main
import (
 _ "github.com/gorilla/websocket"
 _ "go.yaml.in/yaml/v3"
 _ "github.com/chromedp/chromedp"
 _ "github.com/pion/webrtc/v4"
 _ "github.com/pion/turn/v5"
 _ "go.uber.org/goleak"
)

