package session

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/localapi"
)

// Access governance on the device (docs/access.md): the daemon forwards the
// CLI's second-factor and access-request calls to the controller with the
// session, which reports the device's posture at sign-in and every
// postureInterval.

// postureInterval is how often the session reports posture.
const postureInterval = 3 * time.Minute

// controller returns the signed-in control client.
func (m *Manager) controller() (*controlClient, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ctl == nil || m.info == nil {
		return nil, ErrNotSignedIn
	}
	return m.ctl, nil
}

// Call forwards one call to the controller with the session (20 s at most).
func (m *Manager) Call(ctx context.Context, method, path string, in, out any) error {
	cc, err := m.controller()
	if err != nil {
		return err
	}
	return cc.do(ctx, method, path, in, out, 20*time.Second)
}

// ReportPosture sends the device's posture now and returns the verdict.
func (m *Manager) ReportPosture(ctx context.Context) (localapi.Posture, error) {
	cc, err := m.controller()
	if err != nil {
		return localapi.Posture{}, err
	}
	return m.reportPosture(ctx, cc)
}

func (m *Manager) reportPosture(ctx context.Context, cc *controlClient) (localapi.Posture, error) {
	var rep controlapi.PostureReport
	if m.cfg.Posture != nil {
		rep = m.cfg.Posture(ctx)
	}
	rep.Reported = time.Now().UTC()
	m.mu.Lock()
	key, info := m.key, m.info
	m.mu.Unlock()
	if info == nil {
		return localapi.Posture{}, ErrNotSignedIn
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return localapi.Posture{}, err
	}
	signed := controlapi.SignedPosture{Report: body,
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, controlapi.PostureSigningInput(body, info.DeviceID)))}
	var v controlapi.PostureVerdict
	if err := cc.do(ctx, http.MethodPost, controlapi.PathPosture, signed, &v, 20*time.Second); err != nil {
		return localapi.Posture{}, fmt.Errorf("report posture: %w", err)
	}
	return localapi.Posture{Report: rep, Verdict: v}, nil
}

// postureLoop reports posture now and every postureInterval while the
// session runs.
func (m *Manager) postureLoop(ctx context.Context, cc *controlClient) {
	defer m.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if p, err := m.reportPosture(ctx, cc); err != nil {
			if ctx.Err() == nil {
				m.log.Warn("posture report failed", "err", err)
			}
		} else if len(p.Verdict.Failed) > 0 {
			m.log.Info("device posture", "satisfied", p.Verdict.Satisfied, "failed", p.Verdict.Failed)
		}
		t.Reset(postureInterval)
	}
}
