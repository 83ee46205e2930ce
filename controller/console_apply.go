package controller

import (
	"net/http"
	"strconv"
)

// applyPage is the Apply page's data: the pasted file and the plan.
type applyPage struct {
	YAML string
	Plan string
}

func (c *Controller) pageApply(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Apply network.yaml", "apply")
	// Only writers may apply; the API would refuse the others.
	d.Denied = !cs.p.can(capWrite)
	d.Data = applyPage{}
	c.render(w, http.StatusOK, "apply", d)
}

// postApply plans (the Preview button, a dry run) or applies a pasted
// network.yaml through POST /api/v1/apply: the same parser, validation and
// plan as `postern-controller apply`.
func (c *Controller) postApply(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Apply network.yaml", "apply")
	text := r.PostFormValue("yaml")
	path := "/api/v1/apply"
	dry := r.PostFormValue("action") != "apply"
	if dry {
		path += "?dry_run=true"
	}
	var plan Plan
	res, err := c.api(r.Context(), cs.p, "POST", path, []byte(text), &plan)
	ap := applyPage{YAML: text}
	status := http.StatusOK
	switch {
	case err != nil:
		d.Error, status = err.Error(), http.StatusInternalServerError
	case res.Err() != "":
		d.Error, status = res.Err(), formStatus(res)
	default:
		ap.Plan = plan.String()
		if !dry {
			d.Flash = "Applied at revision " + strconv.FormatInt(plan.Revision, 10) + "."
		}
	}
	d.Data = ap
	c.render(w, status, "apply", d)
}

func (c *Controller) pageEvents(w http.ResponseWriter, r *http.Request, cs *consoleSession) {
	d := c.page(cs, "Network events", "events")
	// The newest 500: page to the end, keeping a window.
	var items []EventView
	cursor := ""
	for range 200 {
		var page struct {
			Items      []EventView
			NextCursor string `json:"next_cursor"`
		}
		if !c.listPage(r, cs, &d, "/api/v1/events?limit=1000&cursor="+cursor, &page) {
			break
		}
		items = append(items, page.Items...)
		if len(items) > 500 {
			items = items[len(items)-500:]
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
		items[i], items[j] = items[j], items[i]
	}
	d.Data = items
	c.render(w, http.StatusOK, "events", d)
}
