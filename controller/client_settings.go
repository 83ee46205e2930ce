package controller

import (
	"encoding/json"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/dnsproxy"
)

// Deployment-wide client settings: the synthetic address ranges clients use
// in TUN mode unless the device sets its own (posternd --range4/--range6 or
// the IT preset). They are policy data, declared in the applied file
//
//	client_ranges:
//	  ipv4: 100.80.0.0/16
//	  ipv6: fd00:5054::/48
//
// and kept in the store, so every replica pushes the same ranges and a
// change reaches clients like any other policy change.

// KindClientSettings is the one object, named "client", holding them.
const KindClientSettings = "client_settings"

const clientSettingsName = "client"

// ClientSettings is the stored form (the ranges as client_ranges declares
// them, adminapi.ClientRangesSpec).
type ClientSettings struct {
	ID     string                    `json:"id"`
	Name   string                    `json:"name"`
	Ranges adminapi.ClientRangesSpec `json:"ranges"`
}

// normalizeClient validates client_ranges with the words posternd uses for
// its own flags.
func normalizeClient(spec *Spec, addTop func(field, format string, args ...any)) {
	r := spec.ClientRanges
	if r == nil {
		return
	}
	if r.IPv4 == "" && r.IPv6 == "" {
		addTop("client_ranges", "set ipv4, ipv6 or both (or leave client_ranges out)")
	}
	if r.IPv4 != "" {
		if _, err := dnsproxy.ParseRange4("ipv4", r.IPv4); err != nil {
			addTop("client_ranges", "%v", err)
		}
	}
	if r.IPv6 != "" {
		if _, err := dnsproxy.ParseRange6("ipv6", r.IPv6); err != nil {
			addTop("client_ranges", "%v", err)
		}
	}
}

// desiredClientSettings is the object client_ranges asks for (none when the
// file leaves it out: the stored one is then deleted).
func desiredClientSettings(spec *Spec) []desiredObj {
	if spec.ClientRanges == nil {
		return nil
	}
	want := *spec.ClientRanges
	return []desiredObj{{KindClientSettings, clientSettingsName, func(cur json.RawMessage, id string) (any, []string, error) {
		v := &ClientSettings{}
		if err := decodeInto(cur, v); err != nil {
			return nil, nil, err
		}
		f := diffField(nil, "client_ranges.ipv4", v.Ranges.IPv4, want.IPv4)
		f = diffField(f, "client_ranges.ipv6", v.Ranges.IPv6, want.IPv6)
		v.ID, v.Name, v.Ranges = id, clientSettingsName, want
		return v, f, nil
	}}}
}

// clientRanges are the ranges pushed to clients (empty: none set).
func (m *Model) clientRanges() (v4, v6 string) {
	if m.clientSettings == nil {
		return "", ""
	}
	return m.clientSettings.Ranges.IPv4, m.clientSettings.Ranges.IPv6
}
