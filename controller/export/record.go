package export

import (
	"encoding/json"
	"fmt"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
)

// Record is one exported event (docs/events.md). Network fields are empty
// for audit events and the reverse.
type Record struct {
	ID         string    `json:"id"`   // stable: "audit-N" or "network-N"; dedupe on it
	Type       string    `json:"type"` // audit or network
	Timestamp  time.Time `json:"timestamp"`
	Redelivery bool      `json:"redelivery,omitempty"`

	// network
	Status      string `json:"status,omitempty"` // allowed, denied or failed
	Result      string `json:"result,omitempty"` // the connector's result (ok, denied, posture, idle timeout, ...)
	Reason      string `json:"reason,omitempty"` // why a flow was denied or failed (the result), empty when allowed
	User        string `json:"user,omitempty"`
	Device      string `json:"device,omitempty"`
	Resource    string `json:"resource,omitempty"`
	Connector   string `json:"connector,omitempty"`
	Relay       string `json:"relay,omitempty"`
	ClientIP    string `json:"client_ip,omitempty"`
	Destination string `json:"destination,omitempty"`
	Port        uint16 `json:"port,omitempty"`
	Protocol    string `json:"protocol,omitempty"`
	FlowStart   string `json:"flow_start,omitempty"`
	DurationMS  int64  `json:"duration_ms,omitempty"`
	BytesUp     int64  `json:"bytes_up,omitempty"`
	BytesDown   int64  `json:"bytes_down,omitempty"`

	// audit
	Actor    string          `json:"actor,omitempty"`
	Action   string          `json:"action,omitempty"`
	Kind     string          `json:"kind,omitempty"`
	ObjectID string          `json:"object_id,omitempty"`
	Name     string          `json:"name,omitempty"`
	IP       string          `json:"ip,omitempty"`
	ActorVia string          `json:"actor_via,omitempty"`
	Agent    string          `json:"user_agent,omitempty"`
	Before   json.RawMessage `json:"before,omitempty"`
	After    json.RawMessage `json:"after,omitempty"`

	seq    int64  // id within its stream
	stream string // StreamAudit or StreamNetwork
}

// flowStatus maps a connector result to allowed, denied or failed.
func flowStatus(result string) string {
	switch result {
	case "ok", "closed by policy", "idle timeout", "reset":
		return "allowed"
	case "unreachable", "timeout", "refused":
		return "failed"
	}
	return "denied"
}

func auditRecord(e store.AuditEntry) Record {
	return Record{
		ID: fmt.Sprintf("audit-%d", e.ID), Type: StreamAudit, Timestamp: e.At.UTC(),
		Actor: e.Actor, Action: e.Action, Kind: e.Kind, ObjectID: e.ObjectID, Name: e.Name,
		IP: e.IP, ActorVia: e.ActorVia, Agent: e.UserAgent, Device: e.Device, Before: e.Before, After: e.After,
		seq: e.ID, stream: StreamAudit,
	}
}

func networkRecord(e store.Event) Record {
	r := Record{ID: fmt.Sprintf("network-%d", e.ID), Type: StreamNetwork, Timestamp: e.At.UTC(), seq: e.ID, stream: StreamNetwork}
	var fe controlapi.FlowEvent
	if err := json.Unmarshal(e.Data, &fe); err != nil {
		// Still exported, so that the receiver sees something arrived.
		r.Status, r.Reason = "unknown", "undecodable event: "+err.Error()
		return r
	}
	r.Result, r.Status = fe.Result, flowStatus(fe.Result)
	if r.Status != "allowed" {
		r.Reason = fe.Result
	}
	r.User, r.Device, r.Resource, r.Connector = fe.Principal, fe.Device, fe.ResourceID, fe.ConnectorID
	r.Destination, r.Port, r.Protocol = fe.Destination, fe.Port, fe.Protocol
	if !fe.Start.IsZero() {
		r.FlowStart = fe.Start.UTC().Format(time.RFC3339Nano)
	}
	r.DurationMS, r.BytesUp, r.BytesDown = fe.DurationMS, fe.BytesUp, fe.BytesDown
	return r
}

// merge interleaves the two streams by time, keeping each stream's own
// order (ids) intact whatever the timestamps say.
func merge(audit, network []Record) []Record {
	out := make([]Record, 0, len(audit)+len(network))
	i, j := 0, 0
	for i < len(audit) || j < len(network) {
		if j == len(network) || (i < len(audit) && !network[j].Timestamp.Before(audit[i].Timestamp)) {
			out = append(out, audit[i])
			i++
		} else {
			out = append(out, network[j])
			j++
		}
	}
	return out
}
