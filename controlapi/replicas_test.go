package controlapi_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"postern.dev/postern/controlapi"
)

// replica is an httptest controller that counts the requests it answered.
type replica struct {
	srv  *httptest.Server
	hits atomic.Int64
}

func newReplica(t *testing.T, name string, h http.HandlerFunc) *replica {
	t.Helper()
	r := &replica{}
	if h == nil {
		h = func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintf(w, `{"token":%q}`, name) }
	}
	r.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		h(w, req)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// replicaClient trusts httptest's certificate (every httptest server has
// the same one) and knows urls.
func replicaClient(t *testing.T, urls string, r *replica) *controlapi.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(r.srv.Certificate())
	c, err := controlapi.NewClient(controlapi.ClientConfig{URL: urls, Roots: roots, StreamIdleTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func token(t *testing.T, c *controlapi.Client, method string) (string, error) {
	t.Helper()
	var out controlapi.TokenResponse
	err := c.Call(context.Background(), method, controlapi.PathConnectionToken, controlapi.TokenRequest{ConnectorID: "c1"}, &out)
	return out.Token, err
}

// TestCallFailsOverToTheNextReplica: a replica that is gone (connection
// refused) costs a call nothing but the attempt: it goes to the next one,
// and later calls stay there.
func TestCallFailsOverToTheNextReplica(t *testing.T) {
	a, b := newReplica(t, "a", nil), newReplica(t, "b", nil)
	c := replicaClient(t, a.srv.URL+", "+b.srv.URL+"/", a)
	if got, err := token(t, c, http.MethodPost); err != nil || got != "a" {
		t.Fatalf("first call: %q %v, want a", got, err)
	}
	a.srv.Close()
	for i := 0; i < 3; i++ {
		if got, err := token(t, c, http.MethodPost); err != nil || got != "b" {
			t.Fatalf("call %d after A died: %q %v, want b", i, got, err)
		}
	}
	if c.URL() != b.srv.URL || b.hits.Load() != 3 {
		t.Fatalf("current %s, B answered %d; want B and 3", c.URL(), b.hits.Load())
	}
	if urls := c.URLs(); len(urls) != 2 || urls[0] != a.srv.URL {
		t.Fatalf("URLs %v", urls)
	}
}

// TestCallFailsOverWhenTheConnectionBreaks: a replica that dies under a
// request (its connection closed before any answer) sends the call on.
func TestCallFailsOverWhenTheConnectionBreaks(t *testing.T) {
	a := newReplica(t, "a", func(w http.ResponseWriter, _ *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	})
	a.srv.EnableHTTP2 = false
	b := newReplica(t, "b", nil)
	c := replicaClient(t, a.srv.URL+","+b.srv.URL, a)
	if got, err := token(t, c, http.MethodPost); err != nil || got != "b" || a.hits.Load() != 1 {
		t.Fatalf("%q %v (A hit %d times), want b after one attempt at A", got, err, a.hits.Load())
	}
}

// TestCallFailsOverOnUnavailable: 503 (a replica shutting down) sends the
// call on; other refusals are the answer.
func TestCallFailsOverOnUnavailable(t *testing.T) {
	a := newReplica(t, "a", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"draining"}`, http.StatusServiceUnavailable)
	})
	b := newReplica(t, "b", nil)
	c := replicaClient(t, a.srv.URL+","+b.srv.URL, a)
	if got, err := token(t, c, http.MethodPost); err != nil || got != "b" {
		t.Fatalf("%q %v, want b", got, err)
	}
	d := newReplica(t, "d", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"no session"}`, http.StatusUnauthorized)
	})
	c = replicaClient(t, d.srv.URL+","+b.srv.URL, d)
	if _, err := token(t, c, http.MethodPost); controlapi.StatusCode(err) != http.StatusUnauthorized {
		t.Fatalf("401 from the first replica: %v", err)
	}
	if b.hits.Load() != 1 {
		t.Fatalf("B answered %d calls; a 401 must not fail over", b.hits.Load())
	}
}

// TestStreamResumesOnAnotherReplica: a stream whose replica dies returns,
// and the resume (by revision) goes to the next replica.
func TestStreamResumesOnAnotherReplica(t *testing.T) {
	stream := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "{\"rev\":%q}\n", name+"@"+r.URL.Query().Get("rev"))
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	}
	a, b := newReplica(t, "a", stream("a")), newReplica(t, "b", stream("b"))
	c := replicaClient(t, a.srv.URL+","+b.srv.URL, a)
	read := func(rev int64) ([]string, error) {
		var lines []string
		err := c.Stream(context.Background(), controlapi.PathClientPolicy, rev, func(line []byte) error {
			if line != nil {
				lines = append(lines, string(line))
				if strings.Contains(string(line), "b@") {
					return errDone
				}
				if len(lines) == 1 {
					go a.srv.CloseClientConnections()
				}
			}
			return nil
		})
		return lines, err
	}
	lines, err := read(0)
	if len(lines) != 1 || lines[0] != `{"rev":"a@"}` || err == nil {
		t.Fatalf("first stream: %q %v", lines, err)
	}
	a.srv.Close()
	lines, err = read(7)
	if !errors.Is(err, errDone) || len(lines) != 1 || lines[0] != `{"rev":"b@7"}` {
		t.Fatalf("resumed stream: %q %v, want B from revision 7", lines, err)
	}
}

var errDone = errors.New("done")

// TestSetLearnedAddsReplicas: a client configured with one URL learns the
// others from the controller and fails over to them; invalid learned URLs
// are named and skipped.
func TestSetLearnedAddsReplicas(t *testing.T) {
	a, b := newReplica(t, "a", nil), newReplica(t, "b", nil)
	c := replicaClient(t, a.srv.URL, a)
	err := c.SetLearned([]string{b.srv.URL, "http://plain.example", a.srv.URL})
	if err == nil || !strings.Contains(err.Error(), "plain.example") {
		t.Fatalf("SetLearned: %v, want the http:// URL named", err)
	}
	if urls := c.URLs(); len(urls) != 2 || urls[1] != b.srv.URL {
		t.Fatalf("URLs %v", urls)
	}
	a.srv.Close()
	if got, err := token(t, c, http.MethodPost); err != nil || got != "b" {
		t.Fatalf("%q %v, want b", got, err)
	}
	// Learning again keeps the current replica current.
	if err := c.SetLearned([]string{b.srv.URL}); err != nil || c.URL() != b.srv.URL {
		t.Fatalf("after relearning: current %s (%v)", c.URL(), err)
	}
}

func TestNewClientRejectsABadURLInTheList(t *testing.T) {
	for _, u := range []string{"https://a.example,", "https://a.example,http://b.example", "https://a.example?x=1"} {
		if _, err := controlapi.NewClient(controlapi.ClientConfig{URL: u}); err == nil {
			t.Errorf("NewClient(%q) accepted", u)
		}
	}
}
