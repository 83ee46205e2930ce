package controlapi

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// PathRelayPolicy is the relay's push stream (mTLS, NDJSON of RelayPolicy):
// which connectors exist with which keys, and which devices lost their access.
const PathRelayPolicy = "/api/v1/relay/policy/stream"

// RelayPolicy is a snapshot pushed to relays. A relay accepts a connector's
// signaling connection only when the connector is listed here with the key of
// the certificate it presents, and drops connections that stop matching; it
// refuses signaling and TURN to the devices listed as revoked and stops
// relaying for them at once.
type RelayPolicy struct {
	Keepalive  bool             `json:"keepalive,omitempty"`
	Revision   int64            `json:"rev"`
	Connectors []RelayConnector `json:"connectors"`
	// RevokedDevices are the same device ids connectors are told to cut off.
	RevokedDevices []string `json:"revoked_devices,omitempty"`
	// ControllerURLs are the controller's replicas (its public URL first):
	// a part that loses the one it talks to tries the others.
	ControllerURLs []string `json:"controller_urls,omitempty"`
}

// RelayConnector is one enrolled connector as a relay sees it.
type RelayConnector struct {
	ID string `json:"id"`
	// KeySHA256 is the hex SHA-256 of the DER SubjectPublicKeyInfo of the
	// connector's enrolled key (the key of its deployment-CA client
	// certificate, CN "connector:<id>").
	KeySHA256 string `json:"key_sha256"`
}

// TURNDeviceUsername is the TURN username of a client device:
// "<unix expiry>:<principal>/<device>". Relays tie the allocation to the
// signaling sessions of that principal and device, and refuse it once the
// device is revoked.
func TURNDeviceUsername(expiry time.Time, principal, device string) string {
	return TURNUsername(expiry, principal) + "/" + device
}

// ParseTURNUsername splits a TURN username made by TURNUsername or
// TURNDeviceUsername. device is empty for component credentials.
func ParseTURNUsername(username string) (expiry time.Time, principal, device string, err error) {
	exp, rest, ok := strings.Cut(username, ":")
	if !ok || rest == "" {
		return time.Time{}, "", "", fmt.Errorf("TURN username %q is not <expiry>:<principal>[/<device>]", username)
	}
	sec, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || sec <= 0 {
		return time.Time{}, "", "", fmt.Errorf("TURN username expiry %q is not a positive unix time", exp)
	}
	principal = rest
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		principal, device = rest[:i], rest[i+1:]
		if principal == "" || device == "" {
			return time.Time{}, "", "", fmt.Errorf("TURN username %q has an empty principal or device", username)
		}
	}
	return time.Unix(sec, 0), principal, device, nil
}
