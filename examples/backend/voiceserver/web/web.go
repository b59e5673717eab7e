// Package web holds the browser demo page that the example back end
// serves: it streams synthetic audio through Envoy with the token in
// Sec-WebSocket-Protocol, as a browser must, and shows each frame's round
// trip.
package web

import "embed"

// Files is the demo's static files.
//
//go:embed index.html
var Files embed.FS
