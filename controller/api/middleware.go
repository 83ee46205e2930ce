package api

import (
	"log/slog"
	"net/http"

	"postern.dev/postern/controlapi"
)

// Body limits: every request body, and the two larger ones.
const (
	MaxBody      = 1 << 20
	MaxApplyBody = 64 << 20 // POST /api/v1/apply
	MaxEventBody = 4 << 20  // POST controlapi.PathConnectorEvents
)

// Middleware wraps every route: a handler panic answers 500 (logged), a
// client IP past its rate (allow) answers 429, request bodies are limited
// (MaxBody unless the path allows more), the client IP is kept in the
// request context (RequestIP) and responses say X-Content-Type-Options:
// nosniff.
func Middleware(next http.Handler, log *slog.Logger, allow func(ip string) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panic", "path", r.URL.Path, "panic", v)
				WriteError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		if !allow(ClientIP(r)) {
			w.Header().Set("Retry-After", "1")
			WriteError(w, http.StatusTooManyRequests, "rate limit exceeded for %s", ClientIP(r))
			return
		}
		limit := int64(MaxBody)
		switch r.URL.Path {
		case "/api/v1/apply":
			limit = MaxApplyBody
		case controlapi.PathConnectorEvents:
			limit = MaxEventBody
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		r = r.WithContext(WithRequestIP(r.Context(), ClientIP(r)))
		w.Header().Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}
