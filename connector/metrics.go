package connector

import (
	"encoding/json"
	"net/http"
	"net/http/pprof"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"postern.dev/postern/controlapi"
)

// metrics are the connector's Prometheus metrics (one registry per connector).
type metrics struct {
	reg              *prometheus.Registry
	flows            *prometheus.CounterVec
	bytes            *prometheus.CounterVec
	refusals         *prometheus.CounterVec
	handshakeFail    *prometheus.CounterVec
	controllerErrors *prometheus.CounterVec
	flowsActive      prometheus.Gauge
	connections      prometheus.Gauge
	policyRev        prometheus.Gauge
	lastHeartbeat    prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_connector_flows_total", Help: "Flows by protocol and result.",
		}, []string{"protocol", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_connector_bytes_total", Help: "Bytes relayed (up: client to resource, down: resource to client).",
		}, []string{"direction"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_connector_refusals_total", Help: "Refused flows by status and reason.",
		}, []string{"status", "reason"}),
		handshakeFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_connector_handshake_failures_total", Help: "Refused client connections by reason.",
		}, []string{"reason"}),
		controllerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_connector_controller_errors_total", Help: "Failed calls to the controller.",
		}, []string{"call"}),
		flowsActive: prometheus.NewGauge(prometheus.GaugeOpts{Name: "postern_connector_active_flows", Help: "Flows in progress."}),
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "postern_connector_connections", Help: "Client QUIC connections."}),
		policyRev:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "postern_connector_policy_revision", Help: "Revision of the enforced policy."}),
		lastHeartbeat: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_connector_last_heartbeat_timestamp_seconds", Help: "Time of the last heartbeat the controller accepted.",
		}),
	}
	m.reg.MustRegister(m.flows, m.bytes, m.refusals, m.handshakeFail, m.controllerErrors,
		m.flowsActive, m.connections, m.policyRev, m.lastHeartbeat,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if c.Write(&d) != nil || d.Counter == nil {
		return 0
	}
	return d.Counter.GetValue()
}

func (m *metrics) totalBytes() (up, down int64) {
	return int64(counterValue(m.bytes.WithLabelValues("up"))), int64(counterValue(m.bytes.WithLabelValues("down")))
}

func (m *metrics) activeFlows() float64 {
	var d dto.Metric
	if m.flowsActive.Write(&d) != nil || d.Gauge == nil {
		return 0
	}
	return d.Gauge.GetValue()
}

// Health is the body of /healthz.
type Health struct {
	Status              string   `json:"status"` // "ok", "degraded" (controller unreachable, last policy enforced) or "no policy"
	ConnectorID         string   `json:"connector_id"`
	PolicyRevision      int64    `json:"policy_revision"`
	ControllerReachable bool     `json:"controller_reachable"`
	CertSHA256          []string `json:"cert_sha256"`
	Addrs               []string `json:"addrs"`
	// RelayLinks maps each relay id of the policy to whether the connector's
	// signaling link to it is up.
	RelayLinks map[string]bool `json:"relay_links,omitempty"`
	// ReflexiveAddrs are the QUIC socket's public mappings learned from STUN.
	ReflexiveAddrs []string `json:"reflexive_addrs,omitempty"`
}

// Health reports the connector's state.
func (c *Connector) Health() Health {
	h := Health{ConnectorID: c.ID(), ControllerReachable: c.controllerOK.Load(), CertSHA256: c.certs.digests(), Addrs: c.AdvertisedAddrs(),
		RelayLinks: c.RelayLinks(), ReflexiveAddrs: c.ReflexiveAddrs()}
	switch p := c.policy.Load(); {
	case p == nil:
		h.Status = "no policy"
	case !h.ControllerReachable:
		h.Status, h.PolicyRevision = "degraded", p.rev
	default:
		h.Status, h.PolicyRevision = "ok", p.rev
	}
	return h
}

// MetricsHandler serves /metrics (Prometheus), /healthz (200 while the
// connector enforces a policy, 503 before it has one), /readyz (the same
// decision, for readiness probes) and Go's profiles under
// /debug/pprof/ (the metrics address is an operator's, not a public, one).
func (c *Connector) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(c.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc(controlapi.PathHealth, func(w http.ResponseWriter, r *http.Request) {
		h := c.Health()
		w.Header().Set("Content-Type", "application/json")
		if h.Status == "no policy" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(h)
	})
	// /readyz: 200 while the connector can serve flows (a policy is
	// enforced, also fail-static while the controller is unreachable),
	// 503 before its first policy.
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		h := c.Health()
		w.Header().Set("Content-Type", "application/json")
		ready := map[string]any{"status": "ready", "policy_revision": h.PolicyRevision, "controller_reachable": h.ControllerReachable}
		if h.Status == "no policy" {
			ready["status"], ready["reason"] = "not ready", "no policy from the controller yet"
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(ready)
	})
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	return mux
}
