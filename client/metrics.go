package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// daemonMetrics are posternd's Prometheus series: flow and byte counts, the
// path to each connector, and the DNS proxy's queries and latency. Flow,
// byte and connector series are read from Status at scrape time; DNS series
// are fed by the proxy (TUNConfig.OnDNSQuery).
type daemonMetrics struct {
	reg     *prometheus.Registry
	dnsQ    *prometheus.CounterVec
	dnsTime prometheus.Histogram
	d       *Daemon
}

func newDaemonMetrics() *daemonMetrics {
	m := &daemonMetrics{
		reg: prometheus.NewRegistry(),
		dnsQ: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_client_dns_queries_total", Help: "DNS queries answered by the proxy, by rcode (dropped: no answer).",
		}, []string{"rcode"}),
		dnsTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "postern_client_dns_query_duration_seconds", Help: "Time to answer a DNS query (resource names locally, others upstream).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}),
	}
	m.reg.MustRegister(m.dnsQ, m.dnsTime, statusCollector{m}, collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeDNS is TUNConfig.OnDNSQuery.
func (m *daemonMetrics) observeDNS(rcode int, took time.Duration) {
	label := "dropped"
	if rcode >= 0 {
		if s, ok := dnsRcodes[rcode]; ok {
			label = s
		} else {
			label = strconv.Itoa(rcode)
		}
	}
	m.dnsQ.WithLabelValues(label).Inc()
	m.dnsTime.Observe(took.Seconds())
}

var dnsRcodes = map[int]string{0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}

var (
	descActive    = prometheus.NewDesc("postern_client_active_flows", "Flows in progress.", nil, nil)
	descFlows     = prometheus.NewDesc("postern_client_flows_total", "Flows opened since the daemon started.", nil, nil)
	descBytes     = prometheus.NewDesc("postern_client_bytes_total", "Bytes carried (up: to resources, down: from them).", []string{"direction"}, nil)
	descReachable = prometheus.NewDesc("postern_client_controller_reachable", "1 while the policy stream to the controller is up.", nil, nil)
	descSignedIn  = prometheus.NewDesc("postern_client_signed_in", "1 while the daemon has a session.", nil, nil)
	descConnUp    = prometheus.NewDesc("postern_client_connector_connected", "1 while a QUIC connection to the connector is up.", []string{"connector", "network"}, nil)
	descConnPath  = prometheus.NewDesc("postern_client_connector_path", "The path of the connection to a connector (value 1): direct or relay, over udp or tls.", []string{"connector", "path", "transport"}, nil)
	descConnRTT   = prometheus.NewDesc("postern_client_connector_rtt_seconds", "Smoothed round-trip time to a connected connector.", []string{"connector"}, nil)
	descConnFlows = prometheus.NewDesc("postern_client_connector_flows_total", "Flows carried to a connector.", []string{"connector"}, nil)
	descConnAct   = prometheus.NewDesc("postern_client_connector_active_flows", "Flows in progress to a connector.", []string{"connector"}, nil)
	descConnBytes = prometheus.NewDesc("postern_client_connector_bytes_total", "Bytes carried through a connector.", []string{"connector", "direction"}, nil)
)

// statusCollector turns Status into series at scrape time.
type statusCollector struct{ m *daemonMetrics }

func (statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descActive, descFlows, descBytes, descReachable, descSignedIn,
		descConnUp, descConnPath, descConnRTT, descConnFlows, descConnAct, descConnBytes} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	d := c.m.d
	if d == nil {
		return
	}
	s := d.Status()
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}
	counter := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v, labels...)
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	gauge(descActive, float64(s.ActiveFlows))
	counter(descFlows, float64(s.TotalFlows))
	counter(descBytes, float64(s.BytesUp), "up")
	counter(descBytes, float64(s.BytesDown), "down")
	gauge(descReachable, b2f(s.ControllerReachable))
	gauge(descSignedIn, b2f(s.Principal != nil))
	for _, cs := range s.Connectors {
		name := cs.Name
		if name == "" {
			name = cs.ID
		}
		gauge(descConnUp, b2f(cs.Connected), name, cs.Network)
		if cs.Connected && cs.Path != "" {
			gauge(descConnPath, 1, name, cs.Path, cs.Transport)
			gauge(descConnRTT, cs.RTTMillis/1000, name)
		}
		counter(descConnFlows, float64(cs.TotalFlows), name)
		gauge(descConnAct, float64(cs.ActiveFlows), name)
		counter(descConnBytes, float64(cs.BytesUp), name, "up")
		counter(descConnBytes, float64(cs.BytesDown), name, "down")
	}
}

// handler serves /metrics and /healthz (200 while the daemon runs).
func (m *daemonMetrics) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"status\":\"ok\",\"state\":%q}\n", m.d.Status().State)
	})
	return mux
}

// ErrMetricsAddr: posternd --metrics must be a loopback address (the series
// name connectors and show what this device reaches).
var ErrMetricsAddr = errors.New("--metrics: want a loopback address such as 127.0.0.1:9465")

// checkMetricsAddr accepts host:port with a loopback host (or localhost).
func checkMetricsAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return fmt.Errorf("%w, got %q", ErrMetricsAddr, addr)
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%w, got %q", ErrMetricsAddr, addr)
	}
	return nil
}

// serveMetrics listens on addr and serves m until ctx ends; it returns the
// bound address, for the log and tests.
func serveMetrics(ctx context.Context, addr string, m *daemonMetrics, log *slog.Logger) (net.Addr, error) {
	if err := checkMetricsAddr(addr); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: m.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener", "err", err)
		}
	}()
	context.AfterFunc(ctx, func() { srv.Close() })
	return ln.Addr(), nil
}
