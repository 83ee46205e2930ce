package localapi

import (
	"context"
	"encoding/json"
	"net/http"
)

// PathNetcheck runs the daemon's network check (postern netcheck): relays
// over UDP and TLS, NAT behaviour, per-connector candidate pairs. The answer
// is a traversal.Diagnosis.
const PathNetcheck = "/v1/netcheck"

// Netcheck runs the daemon's network check and returns its JSON report.
func (c *Client) Netcheck(ctx context.Context) (json.RawMessage, error) {
	var out json.RawMessage
	err := c.do(ctx, http.MethodGet, PathNetcheck, nil, &out)
	return out, err
}
