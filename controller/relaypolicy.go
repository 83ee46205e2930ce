package controller

import (
	"encoding/pem"
	"sort"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/pki"
)

// relayPolicy is what relays are told (controlapi.RelayPolicy): the enrolled
// connectors with the digest of their current key, and the revoked devices.
func (m *Model) relayPolicy(now time.Time) controlapi.RelayPolicy {
	p := controlapi.RelayPolicy{Revision: m.Rev, Connectors: []controlapi.RelayConnector{}, RevokedDevices: m.revokedDevices(now)}
	for _, c := range m.Connectors {
		if d := keyDigest(c.PublicKeyPEM); d != "" {
			p.Connectors = append(p.Connectors, controlapi.RelayConnector{ID: c.ID, KeySHA256: d})
		}
	}
	sort.Slice(p.Connectors, func(i, j int) bool { return p.Connectors[i].ID < p.Connectors[j].ID })
	return p
}

// keyDigest is the hex SHA-256 of the DER SubjectPublicKeyInfo in a
// "PUBLIC KEY" PEM block, or "" when there is none (not enrolled yet).
func keyDigest(pubPEM string) string {
	b, _ := pem.Decode([]byte(pubPEM))
	if b == nil || b.Type != "PUBLIC KEY" {
		return ""
	}
	return pki.CertDigest(b.Bytes)
}

// mayUseAnyConnector reports whether principal pid may reach at least one
// resource on a network that has a connector.
func (m *Model) mayUseAnyConnector(pid string) bool {
	for _, c := range m.Connectors {
		if m.mayUseConnector(pid, c) {
			return true
		}
	}
	return false
}
