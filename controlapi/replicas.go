package controlapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// dialTimeout bounds a TCP connect to one replica: a replica whose host is
// gone costs a call this long before it moves to the next.
const dialTimeout = 5 * time.Second

// HappyEyeballsDelay is how long a connection attempt to a name with both
// AAAA and A records waits on the preferred family (IPv6 on a dual-stack
// host, RFC 6724 order) before racing the other one: RFC 8305's recommended
// 250 ms. Go's net.Dialer does the racing (FallbackDelay); its default is
// 300 ms.
const HappyEyeballsDelay = 250 * time.Millisecond

// NewNetDialer is the dialer of connections to the controller and the
// relays: Happy Eyeballs with HappyEyeballsDelay, TCP keepalives.
func NewNetDialer(timeout, keepAlive time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: keepAlive, FallbackDelay: HappyEyeballsDelay}
}

// endpoint is one controller replica's base URL.
type endpoint struct {
	base string // scheme://host[:port], no trailing slash
	host string // host[:port]
}

// replicas is the ordered list of controller URLs a Client knows: the ones
// it was configured with, then those the controller told it about
// (SetLearned). Calls go to the current one and stay there while it
// answers; one that gives no answer makes the call move to the next.
type replicas struct {
	mu         sync.Mutex
	configured []endpoint
	eps        []endpoint // configured, then learned; no duplicates
	cur        int
}

// parseEndpoints parses one or several comma-separated base URLs.
func parseEndpoints(raw string, allowHTTP bool) ([]endpoint, error) {
	var out []endpoint
	for _, one := range strings.Split(raw, ",") {
		ep, err := parseEndpoint(strings.TrimSpace(one), allowHTTP)
		if err != nil {
			return nil, err
		}
		out = appendEndpoint(out, ep)
	}
	return out, nil
}

func parseEndpoint(raw string, allowHTTP bool) (endpoint, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		return endpoint{}, fmt.Errorf("controller URL %q: want https://host[:port]", raw)
	}
	if u.Scheme != "https" && !allowHTTP {
		return endpoint{}, fmt.Errorf("controller URL %q: must start with https://", raw)
	}
	return endpoint{base: u.String(), host: u.Host}, nil
}

func appendEndpoint(list []endpoint, ep endpoint) []endpoint {
	for _, e := range list {
		if e.base == ep.base {
			return list
		}
	}
	return append(list, ep)
}

func (r *replicas) current() endpoint {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.eps[r.cur]
}

// moveFrom makes the replica after ep the current one, unless another call
// already moved on from ep.
func (r *replicas) moveFrom(ep endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.eps[r.cur] == ep {
		r.cur = (r.cur + 1) % len(r.eps)
	}
}

// try runs attempt against the current replica and, while the error means
// that replica did not take the request (see failover), against the next
// ones, each at most once, until ctx ends.
func (r *replicas) try(ctx context.Context, attempt func(endpoint) error) error {
	r.mu.Lock()
	eps := append([]endpoint(nil), r.eps...)
	start := r.cur
	r.mu.Unlock()
	var err error
	for i := range eps {
		ep := eps[(start+i)%len(eps)]
		if err = attempt(ep); err == nil || !failover(err) {
			return err
		}
		if len(eps) > 1 {
			r.moveFrom(ep)
		}
		if ctx.Err() != nil {
			return err
		}
	}
	return err
}

// failover reports whether err, from one replica, sends the request to the
// next: the replica gave no answer (DNS, connect, TLS, a connection that
// broke, a stream gone silent) or said it is unavailable (503). That holds
// for POSTs too: every call the parts make is safe to repeat (sign-in and
// token requests mint a fresh credential, heartbeats and refreshes carry
// state, flow events are delivered at least once), and when a replica dies
// the pooled connection to it breaks under the next request, which must
// not cost the caller that call.
func failover(err error) bool {
	var te *TransportError
	return errors.As(err, &te) || errors.Is(err, ErrStreamIdle) || StatusCode(err) == http.StatusServiceUnavailable
}

// SetLearned sets the controller URLs learned from the controller (its
// replicas, from a policy push), tried after the configured ones. Invalid
// URLs are skipped and named in the error; the valid ones still apply.
func (c *Client) SetLearned(urls []string) error {
	r := &c.reps
	r.mu.Lock()
	defer r.mu.Unlock()
	allowHTTP := r.configured[0].base[:5] == "http:"
	eps := append([]endpoint(nil), r.configured...)
	var bad []string
	for _, u := range urls {
		ep, err := parseEndpoint(u, allowHTTP)
		if err != nil {
			bad = append(bad, err.Error())
			continue
		}
		eps = appendEndpoint(eps, ep)
	}
	cur := r.eps[r.cur]
	r.eps, r.cur = eps, 0
	for i, ep := range eps {
		if ep == cur {
			r.cur = i
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("learned controller URLs skipped: %s", strings.Join(bad, "; "))
	}
	return nil
}

// URLs returns every controller URL the client knows, configured ones
// first.
func (c *Client) URLs() []string {
	r := &c.reps
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.eps))
	for i, ep := range r.eps {
		out[i] = ep.base
	}
	return out
}
