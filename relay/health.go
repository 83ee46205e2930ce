package relay

import (
	"encoding/json"
	"net/http"
)

// pathReady is the readiness probe on the metrics address.
const pathReady = "/readyz"

// Health is the body of /healthz and /readyz.
type Health struct {
	Status         string `json:"status"` // "ok"/"ready", or "not ready"
	Reason         string `json:"reason,omitempty"`
	PolicyRevision int64  `json:"policy_revision"`
	UDPAddr        string `json:"udp_addr,omitempty"`
	TLSAddr        string `json:"tls_addr,omitempty"`
}

// Ready reports whether the relay serves allocations: its sockets are open
// and it has a policy from the controller (connector keys, revoked devices).
func (r *Relay) Ready() (bool, string) {
	switch {
	case !r.running.Load():
		return false, "not started or closed"
	case !r.hasPolicy.Load():
		return false, "no policy from the controller yet"
	}
	return true, ""
}

func (r *Relay) health() Health {
	h := Health{PolicyRevision: r.policyRev.Load()}
	if r.running.Load() {
		h.UDPAddr, h.TLSAddr = r.UDPAddr().String(), r.TLSAddr().String()
	}
	return h
}

// handleHealth is liveness: 200 while the process answers.
func (r *Relay) handleHealth(w http.ResponseWriter, _ *http.Request) {
	h := r.health()
	h.Status = "ok"
	writeHealth(w, http.StatusOK, h)
}

// handleReady is 200 when Ready, else 503 with the reason.
func (r *Relay) handleReady(w http.ResponseWriter, _ *http.Request) {
	h := r.health()
	ok, why := r.Ready()
	if !ok {
		h.Status, h.Reason = "not ready", why
		writeHealth(w, http.StatusServiceUnavailable, h)
		return
	}
	h.Status = "ready"
	writeHealth(w, http.StatusOK, h)
}

func writeHealth(w http.ResponseWriter, code int, h Health) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(h)
}
