package controller

import (
	"context"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// Paths of the readiness probe and the metrics (served by package api).
const (
	PathReady   = api.PathReady
	PathMetrics = api.PathMetrics
)

// metrics are the controller's Prometheus series (one registry per controller).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	signIns  *prometheus.CounterVec
	tokens   *prometheus.CounterVec
	storeDur *prometheus.HistogramVec
	storeErr *prometheus.CounterVec
	follows  *prometheus.CounterVec
}

func newMetrics(c *Controller) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_controller_http_requests_total", Help: "HTTP requests by route pattern, method and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postern_controller_http_request_duration_seconds", Help: "Time to the end of the response (push streams excluded).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"route"}),
		signIns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_controller_sign_ins_total", Help: "Sign-ins by method (password, service_key, oidc, ...) and result (ok, failed, throttled).",
		}, []string{"method", "result"}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_controller_tokens_issued_total", Help: "Credentials issued: connection tokens, TURN credentials, component certificates.",
		}, []string{"kind"}),
		storeDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postern_controller_store_duration_seconds", Help: "Store call latency by operation.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"op"}),
		storeErr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_controller_store_errors_total", Help: "Failed store calls by operation.",
		}, []string{"op"}),
		follows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_controller_model_updates_total", Help: "How the model caught up with commits it did not apply itself (another replica's, or raced ones): incremental (only the changes read) or full (every object reloaded).",
		}, []string{"how"}),
	}
	subs := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "postern_controller_push_subscribers", Help: "Open policy push streams (clients, connectors, relays).",
	}, func() float64 { return float64(c.hub.count()) })
	rev := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "postern_controller_revision", Help: "Revision of the loaded model.",
	}, func() float64 {
		if mo := c.model(); mo != nil {
			return float64(mo.Rev)
		}
		return 0
	})
	m.reg.MustRegister(m.requests, m.latency, m.signIns, m.tokens, m.storeDur, m.storeErr, m.follows, subs, rev,
		exportCollector{c}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) signIn(method, result string) { m.signIns.WithLabelValues(method, result).Inc() }
func (m *metrics) issued(kind string)           { m.tokens.WithLabelValues(kind).Inc() }

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush keeps push streams working through the recorder.
func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// instrument counts requests by the mux pattern they matched (never the raw
// path, whose ids would make unbounded label values).
func (c *Controller) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route := "unmatched"
		if _, p := c.mux.Handler(r); p != "" {
			route = p
		}
		rec := &statusRecorder{ResponseWriter: w}
		start := time.Now()
		defer func() {
			code := rec.code
			if code == 0 {
				code = http.StatusOK
			}
			c.met.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
			if !strings.HasSuffix(route, "/stream") {
				c.met.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
			}
		}()
		next.ServeHTTP(rec, r)
	})
}

// ready reports whether the controller can serve: model loaded, store
// answering within a second.
func (c *Controller) ready(ctx context.Context) (bool, string) {
	if c.model() == nil {
		return false, "model not loaded"
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := c.store.Revision(ctx); err != nil {
		return false, "store: " + err.Error()
	}
	return true, ""
}

// Ready reports whether the controller can serve (api.Status).
func (c *Controller) Ready(ctx context.Context) (bool, string) { return c.ready(ctx) }

// Revision is the model's revision, 0 before it is loaded (api.Status).
func (c *Controller) Revision() int64 {
	if m := c.model(); m != nil {
		return m.Rev
	}
	return 0
}

// RotateTokenKey makes a new token-signing key current and wakes the push
// streams, which send the new JWKS (api.Status).
func (c *Controller) RotateTokenKey() error {
	if err := c.RotateSigningKey(); err != nil {
		return err
	}
	c.hub.notify()
	return nil
}

// PrometheusHandler serves the controller's metrics (api.Status).
func (c *Controller) PrometheusHandler() http.Handler {
	return promhttp.HandlerFor(c.met.reg, promhttp.HandlerOpts{})
}

// MetricsHandler serves /metrics, /healthz, /readyz and /debug/pprof/
// without authentication, for a separate operator-only listener (serve
// --metrics), as the connector's and relay's do.
func (c *Controller) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	s := api.New(c, c.log)
	mux.Handle("GET "+PathMetrics, c.PrometheusHandler())
	mux.HandleFunc("GET "+controlapi.PathHealth, s.HandleHealth)
	mux.HandleFunc("GET "+PathReady, s.HandleReady)
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	return mux
}

// exportCollector reports event-export deliveries per sink.
type exportCollector struct{ c *Controller }

var (
	exportDelivered = prometheus.NewDesc("postern_controller_export_events_total", "Events accepted by an export sink.", []string{"sink"}, nil)
	exportFailures  = prometheus.NewDesc("postern_controller_export_failures_total", "Failed export attempts (retried) by sink.", []string{"sink"}, nil)
	exportLastOK    = prometheus.NewDesc("postern_controller_export_last_ok_timestamp_seconds",
		"When the sink was last caught up or had a batch accepted; alert when it grows stale.", []string{"sink"}, nil)
)

func (e exportCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- exportDelivered
	ch <- exportFailures
	ch <- exportLastOK
}

func (e exportCollector) Collect(ch chan<- prometheus.Metric) {
	ex := e.c.exporter
	if ex == nil {
		return
	}
	d, f := ex.Stats().Snapshot()
	for name, n := range d {
		ch <- prometheus.MustNewConstMetric(exportDelivered, prometheus.CounterValue, float64(n), name)
	}
	for name, n := range f {
		ch <- prometheus.MustNewConstMetric(exportFailures, prometheus.CounterValue, float64(n), name)
	}
	for name, at := range ex.Stats().LastOKSnapshot() {
		ch <- prometheus.MustNewConstMetric(exportLastOK, prometheus.GaugeValue, float64(at.UnixMilli())/1000, name)
	}
}

// timedStore measures every store call.
type timedStore struct {
	store.Store
	m *metrics
}

// timedSharedStore keeps a shared backend recognizable (store.Shared).
type timedSharedStore struct {
	timedStore
	store.Shared
}

func instrumentStore(st store.Store, m *metrics) store.Store {
	t := timedStore{Store: st, m: m}
	if sh, ok := st.(store.Shared); ok {
		return &timedSharedStore{timedStore: t, Shared: sh}
	}
	return &t
}

func (t *timedStore) observe(op string, start time.Time, err error) {
	t.m.storeDur.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		t.m.storeErr.WithLabelValues(op).Inc()
	}
}

func (t *timedStore) Update(ctx context.Context, fn func(store.Tx) error) (int64, bool, error) {
	start := time.Now()
	rev, changed, err := t.Store.Update(ctx, fn)
	t.observe("update", start, err)
	return rev, changed, err
}

func (t *timedStore) View(ctx context.Context, fn func(store.Tx) error) error {
	start := time.Now()
	err := t.Store.View(ctx, fn)
	t.observe("view", start, err)
	return err
}

func (t *timedStore) LoadAll(ctx context.Context) (int64, []store.Object, error) {
	start := time.Now()
	rev, objs, err := t.Store.LoadAll(ctx)
	t.observe("load_all", start, err)
	return rev, objs, err
}

func (t *timedStore) Revision(ctx context.Context) (int64, error) {
	start := time.Now()
	rev, err := t.Store.Revision(ctx)
	t.observe("revision", start, err)
	return rev, err
}

func (t *timedStore) Page(ctx context.Context, kind, after string, limit int) ([]store.Object, error) {
	start := time.Now()
	out, err := t.Store.Page(ctx, kind, after, limit)
	t.observe("page", start, err)
	return out, err
}

func (t *timedStore) AuditLog(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	start := time.Now()
	out, err := t.Store.AuditLog(ctx, after, limit)
	t.observe("audit_log", start, err)
	return out, err
}

func (t *timedStore) AddEvents(ctx context.Context, events []store.Event, max int) error {
	start := time.Now()
	err := t.Store.AddEvents(ctx, events, max)
	t.observe("add_events", start, err)
	return err
}

func (t *timedStore) Events(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	start := time.Now()
	out, err := t.Store.Events(ctx, after, limit)
	t.observe("events", start, err)
	return out, err
}
