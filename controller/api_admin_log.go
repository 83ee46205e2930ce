// Admin API for the logs: the audit log (GET /api/v1/audit) and stored
// flow events (GET /api/v1/events), paged by entry id.

package controller

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
)

// afterParam reads the page size and the cursor (the last entry id seen);
// on bad input it has answered with 400 and returns false.
func afterParam(w http.ResponseWriter, r *http.Request) (int64, int, bool) {
	limit, cursor, ok := api.PageParams(w, r)
	if !ok {
		return 0, 0, false
	}
	var after int64
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || n < 0 {
			api.WriteError(w, http.StatusBadRequest, "query parameter cursor: %q is not an entry id", cursor)
			return 0, 0, false
		}
		after = n
	}
	return after, limit, true
}

// handleAudit is GET /api/v1/audit.
func (c *Controller) handleAudit(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := afterParam(w, r)
	if !ok {
		return
	}
	es, err := c.store.AuditLog(r.Context(), after, limit)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	resp := map[string]any{"items": es}
	if len(es) == limit {
		resp["next_cursor"] = strconv.FormatInt(es[len(es)-1].ID, 10)
	}
	api.WriteJSON(w, http.StatusOK, resp)
}

// EventView is a stored flow event.
type EventView struct {
	ID         int64     `json:"id"`
	ReceivedAt time.Time `json:"received_at"`
	controlapi.FlowEvent
}

// handleEventList is GET /api/v1/events.
func (c *Controller) handleEventList(w http.ResponseWriter, r *http.Request) {
	after, limit, ok := afterParam(w, r)
	if !ok {
		return
	}
	es, err := c.store.Events(r.Context(), after, limit)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
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
	api.WriteJSON(w, http.StatusOK, resp)
}
