// Package voiceserver is the example voice back end: a WebSocket endpoint
// that echoes every message unchanged and in order, and a small REST API.
// It also remembers the last handshakes and requests it saw, so tests can
// prove what Envoy forwarded (and that no token or spoofed identity was
// among it).
package voiceserver

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/coder/websocket"

	"github.com/directpipe/directpipe/examples/backend/voiceserver/web"
)

// maxMessageBytes bounds one echoed message: voice frames are small.
const maxMessageBytes = 1 << 20

// Handshake is what the back end received when a stream opened, or with
// any request (Requests).
type Handshake struct {
	Method  string              `json:"method,omitempty"`
	Path    string              `json:"path"`
	Headers map[string][]string `json:"headers"`
}

// Server holds the recent handshakes and requests; its handlers are safe
// for concurrent use.
type Server struct {
	log *slog.Logger

	handshakes, requests *recorder
	live                 live
}

// New returns a server that remembers the last 64 handshakes and the last
// 256 requests of either port.
func New(log *slog.Logger) *Server {
	return &Server{log: log, handshakes: &recorder{keep: 64}, requests: &recorder{keep: 256}}
}

// recorder keeps the last few requests it is given, newest last.
type recorder struct {
	mu     sync.Mutex
	recent []Handshake
	keep   int
	// total counts every request ever added, beyond the few kept: a
	// weighted split is measured over hundreds of streams.
	total int64
}

func (rec *recorder) add(r *http.Request) {
	h := Handshake{Method: r.Method, Path: r.URL.RequestURI(), Headers: map[string][]string{}}
	for k, v := range r.Header {
		h.Headers[strings.ToLower(k)] = v
	}
	if r.Host != "" {
		h.Headers["host"] = []string{r.Host}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.total++
	rec.recent = append(rec.recent, h)
	if len(rec.recent) > rec.keep {
		rec.recent = rec.recent[len(rec.recent)-rec.keep:]
	}
}

func (rec *recorder) list() []Handshake {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]Handshake(nil), rec.recent...)
}

// recorded records every request but the debug endpoints' own.
func (s *Server) recorded(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/debug/") {
			s.requests.add(r)
		}
		h.ServeHTTP(w, r)
	})
}

// VoiceHandler serves the WebSocket echo under /v1/ (the example route is
// /v1/voice), /debug/handshakes and /debug/requests.
func (s *Server) VoiceHandler() http.Handler {
	mux := http.NewServeMux()
	// Every path under /v1/ echoes, so a policy can give one back end
	// several routes.
	mux.HandleFunc("/v1/", s.echo)
	mux.HandleFunc("GET /debug/handshakes", s.serveList(s.handshakes))
	mux.HandleFunc("GET /debug/requests", s.serveList(s.requests))
	mux.HandleFunc("GET /debug/counts", s.serveCounts)
	// The drain contract: live streams and their Close 1001.
	mux.HandleFunc("GET /debug/streams", s.serveStreams)
	mux.HandleFunc("POST /debug/drain", s.serveDrain)
	// The browser demo.
	mux.Handle("/", http.FileServerFS(web.Files))
	return s.recorded(closeOnRefusal(mux))
}

// RESTHandler serves /api/ and /debug/requests.
func (s *Server) RESTHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/requests", s.serveList(s.requests))
	mux.HandleFunc("GET /api/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"status":"ok"}`+"\n")
	})
	// Any path under /routes/ answers 200 with its name, so that a test
	// can tell a route that reached Envoy (200) from one that did not
	// (Envoy's own 404).
	mux.HandleFunc("GET /routes/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"route": r.PathValue("name")})
	})
	mux.HandleFunc("POST /api/echo", func(w http.ResponseWriter, r *http.Request) {
		// The demo page, served from the voice port, posts its frames here
		// through Envoy: another origin, so the browser needs CORS. No
		// credentials travel, and the echo returns only what was sent.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		jitter, err := jitterOf(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		// Read the whole body first: a frame is small, and answering with a
		// Content-Length keeps the response a single write.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxMessageBytes))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		if !sleep(r.Context(), hold(jitter)) {
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	return s.recorded(mux)
}

// closeOnRefusal ends the connection after any answer but 101, whatever
// the path: behind a tcp mode route only the first request on a
// connection is checked, so after an answer that does not upgrade (a
// refusal, the demo page, a 404) a second request must never be read.
func closeOnRefusal(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(&closingWriter{ResponseWriter: w}, r)
	})
}

type closingWriter struct {
	http.ResponseWriter
	wroteHeader bool
}

func (w *closingWriter) WriteHeader(code int) {
	if !w.wroteHeader && code != http.StatusSwitchingProtocols && code >= 200 {
		w.Header().Set("Connection", "close")
	}
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.wroteHeader = true
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write without WriteHeader answers 200, which must close too.
func (w *closingWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Hijack hands the connection to the WebSocket library after its 101.
func (w *closingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *closingWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *closingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) echo(w http.ResponseWriter, r *http.Request) {
	s.handshakes.add(r)
	jitter, err := jitterOf(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// Envoy's handshake filter checks Origin; the back end sits behind
		// it and sees Envoy's requests, so it does not check again.
		InsecureSkipVerify: true,
		Subprotocols:       offered(r),
		// Frames are 20 ms of audio: compressing them costs latency and
		// saves nothing.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return
	}
	defer conn.CloseNow()
	conn.SetReadLimit(maxMessageBytes)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	st := s.live.add()
	defer s.live.remove(st)
	go s.goAwayAfter(ctx, conn, st)
	if jitter > 0 {
		if err := heldEcho(ctx, conn, jitter); websocket.CloseStatus(err) == -1 && ctx.Err() == nil {
			s.log.Debug("voice stream ended", "error", err)
		}
		return
	}
	for {
		typ, msg, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) == -1 && ctx.Err() == nil {
				s.log.Debug("voice stream ended", "error", err)
			}
			return
		}
		if err := conn.Write(ctx, typ, msg); err != nil {
			return
		}
	}
}

// offered accepts whatever subprotocols the client offered, in its order:
// the token entry, if any, was removed by Envoy's filter before this point.
func offered(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Handshakes returns the recent handshakes, oldest first.
func (s *Server) Handshakes() []Handshake { return s.handshakes.list() }

// Requests returns the recent requests of either port, handshakes
// included, oldest first.
func (s *Server) Requests() []Handshake { return s.requests.list() }

// Counts are how many handshakes and requests the server has seen since it
// started.
type Counts struct {
	Handshakes int64 `json:"handshakes"`
	Requests   int64 `json:"requests"`
}

func (s *Server) counts() Counts {
	out := Counts{}
	for _, c := range []struct {
		rec *recorder
		n   *int64
	}{{s.handshakes, &out.Handshakes}, {s.requests, &out.Requests}} {
		c.rec.mu.Lock()
		*c.n = c.rec.total
		c.rec.mu.Unlock()
	}
	return out
}

func (s *Server) serveCounts(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.counts())
}

func (s *Server) serveList(rec *recorder) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(rec.list())
	}
}
