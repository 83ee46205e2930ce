package controller

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"postern.dev/postern/controlapi"
)

// flowEvent posts one flow event as connector con reports it (the
// connector's own API, with its client certificate).
func (e *testEnv) flowEvent(con *component, principal, device, resourceID, dest, result string) {
	e.t.Helper()
	ev := controlapi.FlowEvents{Events: []controlapi.FlowEvent{{Principal: principal, Device: device, ResourceID: resourceID,
		Destination: dest, Port: 5432, Protocol: "tcp", Start: time.Now(), DurationMS: 3, Result: result}}}
	if st, data := e.call(con.http, "POST", controlapi.PathConnectorEvents, "", ev); st != 204 {
		e.t.Fatalf("events: %d %s", st, data)
	}
}

// waitFor waits (with a deadline) until a JavaScript condition holds in the page.
func (b *browser) waitFor(js string, d time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for !eval[bool](b, `new Promise(r => setTimeout(() => r(!!(`+js+`)), 200))`) {
		if time.Now().After(deadline) {
			b.t.Fatalf("waited %v for %s", d, js)
		}
	}
}

// TestConsoleLiveTailAndOverview: flow events reported through the
// connector API show on the overview's chart and appear in the events
// page's live tail (filtered, each once), with the refusal's reason.
func TestConsoleLiveTailAndOverview(t *testing.T) {
	e, clk := newAccessController(t)
	b := newBrowser(t, e.url)
	e.admin("POST", PathAdmins, AdminRequest{Name: "olivia@example.com", Role: RoleOwner, Password: "owner password 1"}, 201)
	alice := e.login("alice@example.com", "correct horse")
	con := e.enroll(KindConnector, "corp-a")
	e.heartbeat(con, randomDigest(), "192.0.2.10:443")
	db, err := e.c.lookup(t.Context(), KindResource, "prod-db")
	if err != nil {
		t.Fatal(err)
	}
	pid, dev := alice.session.Principal.ID, alice.session.DeviceID
	// Alice's device reports its posture (signed with its key): an OS
	// that satisfies "managed", but no disk encryption.
	rep, _ := json.Marshal(controlapi.PostureReport{OS: "linux", OSVersion: "6.8.0", Firewall: true, ClientVersion: "0.3.0", Reported: clk.Now()})
	sig := ed25519.Sign(alice.priv, controlapi.PostureSigningInput(rep, dev))
	if st, body := e.call(nil, "POST", controlapi.PathPosture, alice.session.SessionToken,
		controlapi.SignedPosture{Report: rep, Signature: base64.StdEncoding.EncodeToString(sig)}); st != 200 {
		t.Fatalf("posture report: %d %s", st, body)
	}
	e.flowEvent(con, pid, dev, db.ID, "db.corp.internal", "ok")
	e.flowEvent(con, pid, dev, db.ID, "db.corp.internal", "approval required")

	b.signIn("olivia@example.com", "owner password 1")
	if n := eval[int](b, `document.querySelectorAll("#flows-chart rect.bar").length`); n < 2 {
		t.Fatalf("overview chart: %d bars, want an allowed and a refused one", n)
	}
	if s := eval[string](b, `document.querySelector("#flows-chart rect.bar-refused title").textContent`); !strings.Contains(s, "2 flows, 1 refused") {
		t.Fatalf("chart bar title %q", s)
	}
	if s := b.text("#refusals"); !strings.Contains(s, "approval required") {
		t.Fatalf("refusals by reason: %q", s)
	}
	b.screenshot("overview-chart")

	// Devices: posture and last seen (the flow events are the latest sighting).
	b.open("/console/devices")
	post := b.text("#device-" + dev + " td.posture")
	for _, want := range []string{"linux 6.8.0", "disk encryption off", "fails managed: disk encryption off"} {
		if !strings.Contains(post, want) {
			t.Fatalf("device posture %q lacks %q", post, want)
		}
	}
	if seen := b.text("#device-" + dev + " td.seen"); !strings.Contains(seen, "(flow)") {
		t.Fatalf("device last seen %q", seen)
	}
	b.screenshot("devices-posture")

	// Connectors: live health, refreshed in place by the page's poll.
	b.open("/console/connectors")
	conRow := `[...document.querySelectorAll("#connectors tbody tr")].find(r => r.cells[0].textContent == "corp-a")`
	if row := eval[string](b, conRow+`.textContent`); !strings.Contains(row, "192.0.2.10:443") || !strings.Contains(row, "up") {
		t.Fatalf("connector row %q", row)
	}
	if st, body := e.call(con.http, "POST", controlapi.PathConnectorHeartbeat, "", controlapi.Heartbeat{CertSHA256: []string{randomDigest()}, Version: "test",
		Addrs: []string{"192.0.2.10:443"}, Load: controlapi.ConnectorLoad{ActiveFlows: 7, Connections: 3, BytesPerSec: 2048, CPUFraction: 0.25}}); st != 200 {
		t.Fatalf("heartbeat: %d %s", st, body)
	}
	b.waitFor(conRow+`.cells[7].textContent == "7" && `+conRow+`.cells[8].textContent.includes("2.0 KiB/s")`, 15*time.Second)
	b.screenshot("connectors-health")

	// The live tail, refused flows only.
	b.open("/console/events?decision=refused")
	if n := eval[int](b, `document.querySelectorAll("#events tbody tr.refused").length`); n != 1 {
		t.Fatalf("events page, refused: %d rows", n)
	}
	e.flowEvent(con, pid, dev, db.ID, "tail-ok.corp.internal", "ok")
	e.flowEvent(con, pid, dev, db.ID, "tail-denied.corp.internal", "posture")
	b.waitFor(`[...document.querySelectorAll("#events tbody.tail-batch tr")].some(r => r.textContent.includes("tail-denied"))`, 20*time.Second)
	row := eval[string](b, `[...document.querySelectorAll("#events tbody.tail-batch tr")].find(r => r.textContent.includes("tail-denied")).textContent`)
	for _, want := range []string{"alice@example.com", "prod-db", "refused", "posture"} {
		if !strings.Contains(row, want) {
			t.Fatalf("tail row %q lacks %q", row, want)
		}
	}
	// A second refusal arrives in a later poll; neither repeats, and the
	// allowed flow never shows under the "refused" filter.
	e.flowEvent(con, pid, dev, db.ID, "tail-second.corp.internal", "mfa required")
	b.waitFor(`document.querySelector("#events").textContent.includes("tail-second")`, 20*time.Second)
	count := func(s string) int {
		return eval[int](b, `[...document.querySelectorAll("#events tbody tr")].filter(r => r.textContent.includes("`+s+`")).length`)
	}
	if n, m, o := count("tail-denied"), count("tail-second"), count("tail-ok"); n != 1 || m != 1 || o != 0 {
		t.Fatalf("tail rows: denied %d, second %d, allowed %d", n, m, o)
	}
	if first := eval[string](b, `document.querySelector("#events tbody.tail-batch tr").textContent`); !strings.Contains(first, "tail-second") {
		t.Fatalf("newest first: top row %q", first)
	}
	b.screenshot("events-tail")
	// The filter form reloads the page with the user filter.
	b.do(chromedp.SendKeys(chromedp.CSS("#fuser"), "bob"))
	b.waitFor(`location.search.includes("user=bob") && location.search.includes("decision=refused") && document.querySelectorAll("#events tbody tr.refused, #events tbody tr.allowed").length == 0`, 10*time.Second)
}
