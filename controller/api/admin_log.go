// Admin API for the logs: the audit log (GET /api/v1/audit) and stored
// flow events (GET /api/v1/events), paged by entry id.

package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
)

func (s *Server) logRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/v1/audit", s.Admin(s.handleAudit))
	mux.HandleFunc("GET /api/v1/events", s.Admin(s.handleEventList))
}

// afterParam reads the page size and the cursor (the last entry id seen);
// on bad input it has answered with 400 and returns false.
func afterParam(w http.ResponseWriter, r *http.Request) (int64, int, bool) {
	limit, cursor, ok := PageParams(w, r)
	if !ok {
		return 0, 0, false
	}
	var after int64
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || n < 0 {
			WriteError(w, http.StatusBadRequest, "query parameter cursor: %q is not an entry id", cursor)
			return 0, 0, false
		}
		after = n
	}
	return after, limit, true
}

// handleAudit is GET /api/v1/audit.
func (s *Server) handleAudit(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := afterParam(w, r)
	if !ok {
		return
	}
	es, err := s.core.AuditLog(r.Context(), after, limit)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	resp := map[string]any{"items": es}
	if len(es) == limit {
		resp["next_cursor"] = strconv.FormatInt(es[len(es)-1].ID, 10)
	}
	WriteJSON(w, http.StatusOK, resp)
}

// EventView is a stored flow event.
type EventView struct {
	ID         int64     `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	controlapi.FlowEvent
}

// handleEventList is GET /api/v1/events.
func (s *Server) handleEventList(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := afterParam(w, r)
	if !ok {
		return
	}
	es, err := s.core.FlowEvents(r.Context(), after, limit)
	if err != nil {
		WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	items := make([]EventView, 0, len(es))
	for _, e := range es {
		v := EventView{ID: e.ID, ReceivedAt: e.At}
		if err := json.Unmarshal(e.Data, &v.FlowEvent); err != nil {
			continue
		}
		items = append(items, v)
	}
	resp := map[string]any{"items": items}
	if len(es) == limit {
		resp["next_cursor"] = strconv.FormatInt(es[len(es)-1].ID, 10)
	}
	WriteJSON(w, http.StatusOK, resp)
}
