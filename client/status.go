package client

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"postern.dev/postern/localapi"
	"postern.dev/postern/version"
)

// Status reports the daemon's state.
func (d *Daemon) Status() localapi.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statusLocked()
}

func (d *Daemon) statusLocked() localapi.Status {
	s := localapi.Status{Version: version.Version, Connectors: []localapi.ConnectorStatus{}}
	ss := d.sm.State()
	if ss.Info == nil {
		s.State = localapi.StateSignedOut
		s.Message = d.lastErr
		// Where "Sign in" goes (the tray uses it): preset or remembered.
		s.ControllerURL, _ = d.sm.DefaultController()
		return s
	}
	s.ControllerURL = ss.Info.ControllerURL
	p := ss.Info.Principal
	s.Principal = &localapi.Principal{ID: p.ID, Kind: p.Kind, Name: p.Name, Groups: p.Groups}
	s.DeviceID = ss.Info.DeviceID
	s.ControllerReachable = ss.Reachable
	if !ss.Reachable {
		s.ControllerDownSince = ss.DownSince
	}
	// The policy the tunnel follows: "connected" only once its routes are
	// installed.
	pol := d.applied
	s.ActiveFlows = int(d.activeFlows.Load())
	s.TotalFlows = d.totalFlows.Load()
	s.BytesUp = d.bytesUp.Load()
	s.BytesDown = d.bytesDown.Load()
	var reachable, unreachable []localapi.ConnectorStatus
	if d.pool != nil {
		for _, c := range d.pool.snapshot() {
			if !c.connected && c.total == 0 && c.active == 0 && c.lastErr == "" {
				continue // known, never used
			}
			s.Connectors = append(s.Connectors, localapi.ConnectorStatus{
				ID: c.info.ID, Name: c.info.Name, Network: c.info.Network,
				Path: c.path.Path, Transport: c.path.Transport, RemoteAddr: c.path.RemoteAddr,
				RTTMillis: float64(c.rtt.Microseconds()) / 1000, Connected: c.connected,
				ActiveFlows: int(c.active), TotalFlows: c.total, BytesUp: c.up, BytesDown: c.down,
				TokenExpiry: c.tokenExp, State: c.state, Since: c.since, LastError: c.lastErr,
			})
			cs := &s.Connectors[len(s.Connectors)-1]
			if !c.connected {
				cs.Path = ""
			}
			if c.state == ConnStateConnected || c.state == ConnStateSilent {
				cs.LastError = ""
				reachable = append(reachable, *cs)
			} else {
				unreachable = append(unreachable, *cs)
			}
		}
	}
	if pol != nil {
		nets := map[string]bool{}
		for _, r := range pol.Resources {
			nets[r.Network] = true
		}
		if len(nets) == 1 {
			for n := range nets {
				s.Network = n
			}
		}
	}
	switch {
	case !d.up:
		s.State = localapi.StateStopped
	case pol == nil && !ss.Reachable:
		s.State = localapi.StateConnecting
		if !ss.DownSince.IsZero() {
			s.State = localapi.StateDegraded
		}
	case !ss.Reachable && !ss.DownSince.IsZero():
		s.State = localapi.StateDegraded
	case pol == nil:
		s.State = localapi.StateConnecting
	default:
		s.State = localapi.StateConnected
	}
	if d.front != nil {
		d.front.Describe(&s)
	}
	if d.pushed.warning != "" {
		s.Warnings = append(s.Warnings, d.pushed.warning)
	}
	if s.State != localapi.StateConnected {
		s.Message = d.lastErr
	}
	if d.up && len(reachable) == 0 && len(unreachable) == 0 && pol != nil && len(pol.Connectors) > 0 {
		// Nothing dialed yet: still not "connected" when the controller
		// reports every connector offline.
		var off []string
		for _, c := range pol.Connectors {
			if c.Online {
				off = nil
				break
			}
			off = append(off, c.Name)
		}
		if len(off) > 0 {
			if s.State == localapi.StateConnected {
				s.State = localapi.StateDegraded
			}
			s.Message = "no connector online: the controller reports " + strings.Join(off, ", ") + " offline"
		}
	}
	if d.up && len(reachable) == 0 && len(unreachable) > 0 {
		// Never a bare "connected" while no connector can be reached.
		if s.State == localapi.StateConnected {
			s.State = localapi.StateDegraded
		}
		msg := "no connector reachable: " + describeUnreachable(unreachable)
		if s.Message != "" {
			msg += "; " + s.Message
		}
		s.Message = msg
	}
	return s
}

// describeUnreachable says, per connector, why it has no connection.
func describeUnreachable(cs []localapi.ConnectorStatus) string {
	parts := make([]string, 0, len(cs))
	for _, c := range cs {
		p := c.Name + " " + c.State
		if !c.Since.IsZero() {
			p += " since " + c.Since.Format(time.RFC3339)
		}
		if c.LastError != "" {
			p += " (last error: " + c.LastError + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, ", ")
}

// Resources lists the resources the principal may use.
func (d *Daemon) Resources() []localapi.Resource {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []localapi.Resource{}
	if d.applied == nil {
		return out
	}
	var names NameMapper
	if d.front != nil {
		names = d.front.Names()
	}
	for _, r := range d.applied.Resources {
		lr := localapi.Resource{ID: r.ID, Name: r.Name, Alias: r.Alias, Address: r.Address, Network: r.Network, Ports: r.Ports, Require: r.Require, Access: r.Access}
		if lr.Ports == nil {
			lr.Ports = []string{}
		}
		if sa, ok := names.(interface{ SyntheticAddrs(string) []netip.Addr }); ok {
			for _, a := range sa.SyntheticAddrs(r.ID) {
				lr.SyntheticAddrs = append(lr.SyntheticAddrs, a.String())
			}
		}
		out = append(out, lr)
	}
	return out
}

// ExplainDNS says how name resolves.
func (d *Daemon) ExplainDNS(ctx context.Context, name string) (localapi.DNSExplain, error) {
	d.mu.Lock()
	fe := d.front
	t := d.table.Load()
	d.mu.Unlock()
	if fe != nil {
		if ex, ok := fe.Explain(ctx, name); ok {
			return ex, nil
		}
	}
	ex := localapi.DNSExplain{Name: name}
	if tgt, ok := t.resolveHost(name, nil); ok {
		ex.Resource = tgt.res.Name
		ex.Pattern = tgt.res.Address
		for _, c := range t.connectors[tgt.res.Network] {
			ex.Connectors = append(ex.Connectors, c.Name)
		}
		ex.Note = "resolved by the connector inside the private network"
	} else {
		ex.Note = "not a resource: resolved by the normal system resolver"
	}
	return ex, nil
}

// names returns the front-end's name mapper.
func (d *Daemon) names() NameMapper {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.front == nil {
		return nil
	}
	return d.front.Names()
}
