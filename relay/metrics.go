package relay

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the relay's Prometheus series.
type metrics struct {
	reg      *prometheus.Registry
	bytes    *prometheus.CounterVec
	packets  *prometheus.CounterVec
	peers    *prometheus.GaugeVec
	refusals *prometheus.CounterVec
	sessions prometheus.Gauge
}

func newMetrics(allocations func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_relay_bytes_total",
			Help: "Bytes relayed between TURN allocations and peers, by direction (to_peer, from_peer).",
		}, []string{"direction"}),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_relay_packets_total",
			Help: "Packets relayed, by direction (to_peer, from_peer).",
		}, []string{"direction"}),
		peers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postern_relay_signal_peers",
			Help: "Authenticated signaling connections, by role (client, connector).",
		}, []string{"role"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_relay_refusals_total",
			Help: "Refused requests, by reason (credential, expired, quota, unregistered, revoked, peer, signal_auth, signal_rate, not_connected, tls, malformed).",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_relay_signal_sessions",
			Help: "Open client signaling sessions.",
		}),
	}
	alloc := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "postern_relay_allocations",
		Help: "Active TURN allocations.",
	}, allocations)
	m.reg.MustRegister(m.bytes, m.packets, m.peers, m.refusals, m.sessions, alloc)
	return m
}

func (m *metrics) refuse(reason string) { m.refusals.WithLabelValues(reason).Inc() }
