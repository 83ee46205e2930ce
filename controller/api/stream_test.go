package api

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/adminapi"
)

// feedCore is an in-memory model for the push streams: a revision, a
// policy body per revision, and the subscribers to wake.
type feedCore struct {
	fakeCore
	mu     sync.Mutex
	rev    int64
	policy string // the snapshot's payload
	end    string
	subs   []chan struct{}
	kind   string // of the mTLS caller
}

type feedPolicy struct {
	Rev    int64  `json:"rev"`
	Policy string `json:"policy"`
}

func (f *feedCore) SubscribePolicy(components bool) (<-chan struct{}, func()) {
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	f.subs = append(f.subs, ch)
	f.mu.Unlock()
	return ch, func() {}
}

func (f *feedCore) PolicyRevision() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rev
}

func (f *feedCore) StreamKeepalive() time.Duration { return time.Hour }

func (f *feedCore) feed() Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.end != "" {
		return Snapshot{End: f.end}
	}
	p := &feedPolicy{Policy: f.policy}
	return Snapshot{Rev: f.rev, Body: p, SetRev: func(rev int64) { p.Rev = rev }}
}

func (f *feedCore) ConnectorPolicy(id string) PolicyFeed { return f.feed }
func (f *feedCore) RelayPolicy(id string) PolicyFeed     { return f.feed }

func (f *feedCore) ComponentIdentity(r *http.Request) (string, string, error) {
	return f.kind, "c1", nil
}

func (f *feedCore) ClientSession(ctx context.Context, token string) (ClientSession, error) {
	if token != "good" {
		return nil, ErrAdminAuth
	}
	return &feedSession{f: f}, nil
}

type feedSession struct {
	ClientSession
	f *feedCore
}

func (s *feedSession) PolicyFeed() PolicyFeed { return s.f.feed }

// change sets the model and wakes every stream.
func (f *feedCore) change(rev int64, policy, end string) {
	f.mu.Lock()
	f.rev, f.policy, f.end = rev, policy, end
	subs := f.subs
	f.mu.Unlock()
	for _, ch := range subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// openStream opens path and returns its lines.
func openStream(t *testing.T, srv *httptest.Server, path string) (*http.Response, <-chan string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer good")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return resp, lines
}

func nextLine(t *testing.T, lines <-chan string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatal("stream ended")
		}
		return l
	case <-time.After(5 * time.Second):
		t.Fatal("no line within 5s")
	}
	return ""
}

func TestPolicyStream(t *testing.T) {
	core := &feedCore{rev: 3, policy: "a", kind: adminapi.KindConnector}
	mux := http.NewServeMux()
	New(core, slog.New(slog.DiscardHandler)).Routes(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	resp, lines := openStream(t, srv, controlapi.PathClientPolicy)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("open: %d %v", resp.StatusCode, resp.Header)
	}
	if l := nextLine(t, lines); l != `{"rev":3,"policy":"a"}` {
		t.Fatalf("first line %q", l)
	}
	// A new revision with the same snapshot is not sent (the next line is
	// rev 5's); a changed one is, with its revision patched in.
	core.change(4, "a", "")
	core.change(5, "b", "")
	if l := nextLine(t, lines); l != `{"rev":5,"policy":"b"}` {
		t.Fatalf("changed line %q", l)
	}

	// Resume at the current revision: nothing until it moves (the first
	// line is rev 6's).
	_, resumed := openStream(t, srv, controlapi.PathConnectorPolicy+"?rev=5")
	core.change(6, "c", "")
	for _, ls := range []<-chan string{lines, resumed} {
		if l := nextLine(t, ls); l != `{"rev":6,"policy":"c"}` {
			t.Fatalf("rev 6 line %q", l)
		}
	}
	// A revision from the future gets a snapshot at once.
	_, future := openStream(t, srv, controlapi.PathConnectorPolicy+"?rev=99")
	if l := nextLine(t, future); l != `{"rev":6,"policy":"c"}` {
		t.Fatalf("future line %q", l)
	}

	// The end of the feed ends every stream with its reason.
	core.change(7, "c", "session ended; sign in again")
	for _, ls := range []<-chan string{lines, resumed, future} {
		if l := nextLine(t, ls); l != `{"error":"session ended; sign in again"}` {
			t.Fatalf("end line %q", l)
		}
		if _, open := <-ls; open {
			t.Fatal("stream still open after its end")
		}
	}
}

func TestPolicyStreamRefusals(t *testing.T) {
	core := &feedCore{rev: 1, policy: "a", kind: adminapi.KindRelay}
	for _, tc := range []struct {
		path, token string
		status      int
		msg         string
	}{
		{controlapi.PathConnectorPolicy + "?rev=abc", "", 403, "this endpoint is for connectors, not relays"},
		{controlapi.PathRelayPolicy + "?rev=abc", "", 400, `query parameter rev: "abc" is not a revision number`},
		{controlapi.PathRelayPolicy + "?rev=-1", "", 400, `query parameter rev: "-1" is not a revision number`},
		{controlapi.PathClientPolicy, "bad", 401, ErrAdminAuth.Error()},
		{controlapi.PathClientPolicy + "?rev=x", "good", 400, `query parameter rev: "x" is not a revision number`},
	} {
		mux := http.NewServeMux()
		New(core, slog.New(slog.DiscardHandler)).Routes(mux)
		r := httptest.NewRequest("GET", tc.path, nil)
		r.Header.Set("Authorization", "Bearer "+tc.token)
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		if w.Code != tc.status || apiError(t, w) != tc.msg {
			t.Errorf("%s: %d %q, want %d %q", tc.path, w.Code, w.Body, tc.status, tc.msg)
		}
	}
	core.mu.Lock()
	defer core.mu.Unlock()
	if len(core.subs) != 0 {
		t.Errorf("a refused stream subscribed (%d)", len(core.subs))
	}
}

// A body whose encoding does not start with the revision is encoded again
// with it set.
func TestWithRevOtherShape(t *testing.T) {
	p := &struct {
		Name string `json:"name"`
		Rev  int64  `json:"rev"`
	}{Name: "x"}
	body, _ := json.Marshal(p)
	got := string(withRev(body, Snapshot{Rev: 9, Body: p, SetRev: func(r int64) { p.Rev = r }}))
	if !strings.Contains(got, `"rev":9`) {
		t.Errorf("withRev: %s", got)
	}
}
