package console

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/api"
)

// The events page: the newest flow events, filtered by user, resource and
// decision, and a live tail. The tail is an htmx poll (every 2 s) of
// /console/events/tail with a cursor, the id of the last event the page
// has seen: every answer carries the events after it and a new poll element
// with the next cursor, so no event is shown twice and none is skipped.

// eventFilter is the events page's filter form.
type eventFilter struct {
	User, Resource string
	Decision       string // "", "allowed" or "refused"
}

func eventFilterFrom(q url.Values) eventFilter {
	return eventFilter{User: strings.TrimSpace(q.Get("user")), Resource: strings.TrimSpace(q.Get("resource")), Decision: q.Get("decision")}
}

// query is the filter as URL parameters (with a leading "&" when not empty).
func (f eventFilter) query() string {
	v := url.Values{}
	for k, s := range map[string]string{"user": f.User, "resource": f.Resource, "decision": f.Decision} {
		if s != "" {
			v.Set(k, s)
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "&" + v.Encode()
}

// eventRow is one flow event as the page shows it, with names for ids.
type eventRow struct {
	api.EventView
	User, ResourceName, Decision string
}

func (f eventFilter) match(r eventRow) bool {
	has := func(q string, fields ...string) bool {
		if q == "" {
			return true
		}
		for _, s := range fields {
			if strings.Contains(strings.ToLower(s), strings.ToLower(q)) {
				return true
			}
		}
		return false
	}
	return has(f.User, r.User, r.Principal) && has(f.Resource, r.ResourceName, r.ResourceID, r.Destination) &&
		(f.Decision == "" || f.Decision == r.Decision)
}

// eventNames maps principal and resource ids to names, read through the
// API with the admin's identity.
type eventNames struct{ principals, resources map[string]string }

func (c *Server) eventNames(ctx context.Context, cs *consoleSession) eventNames {
	n := eventNames{principals: map[string]string{}, resources: map[string]string{}}
	var users struct{ Items []adminapi.UserView }
	c.api(ctx, "GET", "/api/v1/users?limit=1000", nil, &users)
	for _, u := range users.Items {
		n.principals[u.ID] = u.Email
	}
	var sas struct{ Items []adminapi.ServiceAccountView }
	c.api(ctx, "GET", "/api/v1/service-accounts?limit=1000", nil, &sas)
	for _, a := range sas.Items {
		n.principals[a.ID] = a.Name
	}
	var res struct {
		Items []struct{ ID, Name string }
	}
	c.api(ctx, "GET", "/api/v1/resources?limit=1000", nil, &res)
	for _, r := range res.Items {
		n.resources[r.ID] = r.Name
	}
	return n
}

func (n eventNames) row(e api.EventView) eventRow {
	r := eventRow{EventView: e, User: n.principals[e.Principal], ResourceName: n.resources[e.ResourceID], Decision: "allowed"}
	if r.User == "" {
		r.User = e.Principal
	}
	if r.ResourceName == "" {
		r.ResourceName = e.ResourceID
	}
	if refused(e.Result) {
		r.Decision = "refused"
	}
	return r
}

// scanEvents calls fn with every stored event after the cursor, oldest
// first (at most pages pages of 1000), and returns the id of the last one
// (after itself when there is none) and the API's status on failure.
func (c *Server) scanEvents(ctx context.Context, cs *consoleSession, after int64, pages int, fn func(api.EventView)) (int64, apiResult, error) {
	last := after
	for range pages {
		var page struct {
			Items      []api.EventView
			NextCursor string `json:"next_cursor"`
		}
		res, err := c.api(ctx, "GET", "/api/v1/events?limit=1000&cursor="+strconv.FormatInt(last, 10), nil, &page)
		if err != nil || res.Err() != "" {
			return last, res, err
		}
		for _, e := range page.Items {
			fn(e)
			if e.ID > last {
				last = e.ID
			}
		}
		if page.NextCursor == "" {
			break
		}
	}
	return last, apiResult{Status: http.StatusOK}, nil
}

// eventsPage is the events page's data; Tail is the poll's state.
type eventsPage struct {
	Filter eventFilter
	Rows   []eventRow
	Tail   tailData
}

// tailData is one answer of the live tail: the poll element (with the next
// cursor) and the new matching events, newest first.
type tailData struct {
	URL  string
	Rows []eventRow
}

func tailURL(cursor int64, f eventFilter) string {
	return "/console/events/tail?after=" + strconv.FormatInt(cursor, 10) + f.query()
}

func (c *Server) pageEvents(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Network events", "events")
	f := eventFilterFrom(r.URL.Query())
	names := c.eventNames(r.Context(), cs)
	var rows []eventRow
	last, res, err := c.scanEvents(r.Context(), cs, 0, 200, func(e api.EventView) {
		if row := names.row(e); f.match(row) {
			rows = append(rows, row)
			if len(rows) > 1000 {
				rows = rows[len(rows)-500:]
			}
		}
	})
	d.answered(res, err)
	if len(rows) > 500 {
		rows = rows[len(rows)-500:]
	}
	reverse(rows)
	d.Data = eventsPage{Filter: f, Rows: rows, Tail: tailData{URL: tailURL(last, f)}}
	c.render(w, http.StatusOK, "events", d)
}

// pageEventsTail answers the live tail's poll: 204 (nothing to swap, the
// poll goes on with the same cursor) when no event came, else the new poll
// element and the matching events.
func (c *Server) pageEventsTail(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	q := r.URL.Query()
	after, err := strconv.ParseInt(q.Get("after"), 10, 64)
	if err != nil || after < 0 {
		consoleHeaders(w)
		http.Error(w, "after: "+strconv.Quote(q.Get("after"))+" is not an event id", http.StatusBadRequest)
		return
	}
	f := eventFilterFrom(q)
	names := c.eventNames(r.Context(), cs)
	var rows []eventRow
	last, res, err := c.scanEvents(r.Context(), cs, after, 20, func(e api.EventView) {
		if row := names.row(e); f.match(row) {
			rows = append(rows, row)
		}
	})
	if err != nil || res.Err() != "" {
		msg := res.Err()
		if err != nil {
			msg = err.Error()
		}
		c.renderFragment(w, statusOf(res), "tailerror", msg)
		return
	}
	if last == after {
		consoleHeaders(w)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if len(rows) > 500 {
		rows = rows[len(rows)-500:]
	}
	reverse(rows)
	c.renderFragment(w, http.StatusOK, "tail", tailData{URL: tailURL(last, f), Rows: rows})
}

func reverse[T any](s []T) {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
}

// flowStats is the overview's flow summary over a window ending at now:
// flows per minute (allowed and refused) and refusals by reason.
type flowStats struct {
	Flows    int
	Refusals []reasonCount
	Allowed  []int // per minute, oldest first
	Refused  []int
	End      time.Time
}

func newFlowStats(minutes int, end time.Time) *flowStats {
	return &flowStats{Allowed: make([]int, minutes), Refused: make([]int, minutes), End: end}
}

// add counts one event, if it falls in the window.
func (s *flowStats) add(e controlapi.FlowEvent, at time.Time, counts map[string]int) {
	n := len(s.Allowed)
	age := s.End.Sub(at)
	if age < 0 || age >= time.Duration(n)*time.Minute {
		return
	}
	i := n - 1 - int(age/time.Minute)
	s.Flows++
	if refused(e.Result) {
		s.Refused[i]++
		counts[e.Result]++
	} else {
		s.Allowed[i]++
	}
}
