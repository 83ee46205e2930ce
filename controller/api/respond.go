package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"postern.dev/postern/controlapi"
)

// WriteJSON answers with status and v as indented JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// WriteError answers with status and a controlapi.Error carrying the
// formatted message.
func WriteError(w http.ResponseWriter, status int, format string, args ...any) {
	WriteJSON(w, status, controlapi.Error{Error: fmt.Sprintf(format, args...)})
}

// DecodeJSON reads a JSON body strictly (unknown fields refused); on bad
// input it has answered (400, or 413 past the body limit) and returns false.
func DecodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			WriteError(w, http.StatusRequestEntityTooLarge, "request body larger than %d bytes", mbe.Limit)
		case errors.Is(err, io.EOF):
			WriteError(w, http.StatusBadRequest, "request body: empty, a JSON object is required")
		default:
			WriteError(w, http.StatusBadRequest, "request body: %v", err)
		}
		return false
	}
	if dec.More() {
		WriteError(w, http.StatusBadRequest, "request body: trailing data after the JSON object")
		return false
	}
	return true
}

// Bearer returns the token of an "Authorization: Bearer" header, or "".
func Bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return ""
}

// RandomHex returns n random bytes in hex: the secrets the controller hands
// out (session, service and admin tokens, enrollment secrets, console
// sessions) and the console's one-time values (crypto/rand.Read never fails
// since Go 1.24).
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// ClientIP is the address the request came from (without its port).
func ClientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type ctxKey int

const ctxClientIP ctxKey = iota

// WithRequestIP keeps the client IP of a request in its context, so that
// audit entries written on its behalf record it (Middleware sets it).
func WithRequestIP(ctx context.Context, ip string) context.Context {
	return context.WithValue(ctx, ctxClientIP, ip)
}

// RequestIP is the client IP WithRequestIP kept in ctx, or "".
func RequestIP(ctx context.Context) string {
	ip, _ := ctx.Value(ctxClientIP).(string)
	return ip
}

// PageParams reads ?limit= (1 to 1000, default 100) and ?cursor=; on bad
// input it has answered with 400 and returns false.
func PageParams(w http.ResponseWriter, r *http.Request) (limit int, cursor string, ok bool) {
	limit = 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			WriteError(w, http.StatusBadRequest, "query parameter limit: %q must be a number from 1 to 1000", v)
			return 0, "", false
		}
		limit = n
	}
	return limit, r.URL.Query().Get("cursor"), true
}

// writeItems answers {"items": [...]} (never null), or 500 on err.
func writeItems[T any](w http.ResponseWriter, items []T, err error) {
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	if items == nil {
		items = []T{}
	}
	WriteJSON(w, http.StatusOK, map[string]any{"items": items})
}
