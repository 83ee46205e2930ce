package controller

import (
	"net/http"
	"strings"
	"testing"
)

// TestEventsTailCursor: the tail answers the events after its cursor once
// (with the next cursor), 204 when nothing came, 400 for a bad cursor.
func TestEventsTailCursor(t *testing.T) {
	e := newTestController(t, t.TempDir(), nil)
	e.apply(testYAML)
	con := e.enroll(KindConnector, "corp-a")
	e.admin("POST", PathAdmins, AdminRequest{Name: "aud", Role: RoleAuditor, Password: "a long password 3"}, 201)
	cl := e.consoleClient()
	e.consoleSignIn(cl, "aud", "a long password 3")
	tail := func(q string) (int, string) {
		st, body, _ := e.consoleGet(cl, "/console/events/tail?"+q)
		return st, body
	}
	if st, _ := tail("after=x"); st != http.StatusBadRequest {
		t.Fatalf("bad cursor: %d", st)
	}
	e.flowEvent(con, "usr_x", "dev_x", "res_x", "one.corp.internal", "denied")
	e.flowEvent(con, "usr_x", "dev_x", "res_x", "two.corp.internal", "ok")
	st, body := tail("after=0&decision=refused")
	if st != 200 || !strings.Contains(body, "one.corp.internal") || strings.Contains(body, "two.corp.internal") || !strings.Contains(body, "denied") {
		t.Fatalf("first poll: %d %s", st, body)
	}
	i := strings.Index(body, `hx-get="`)
	next := strings.ReplaceAll(body[i+len(`hx-get="`):strings.Index(body[i+len(`hx-get="`):], `"`)+i+len(`hx-get="`)], "&amp;", "&")
	q := strings.TrimPrefix(next, "/console/events/tail?")
	if !strings.Contains(q, "decision=refused") || q == "after=0&decision=refused" {
		t.Fatalf("next poll %q", next)
	}
	if st, body := tail(q); st != http.StatusNoContent {
		t.Fatalf("poll with nothing new: %d %s", st, body)
	}
	e.flowEvent(con, "usr_x", "dev_x", "res_x", "three.corp.internal", "unreachable")
	if st, body := tail(q); st != 200 || !strings.Contains(body, "three.corp.internal") || strings.Contains(body, "one.corp.internal") {
		t.Fatalf("third poll: %d %s", st, body)
	}
}
