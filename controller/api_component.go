package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/pki"
)

// EnrollmentToken mints a single-use enrollment token for the connector or
// relay called name (ttl 0: Config.EnrollmentTTL) and returns its printed
// form. A connector must be listed under a remote network; a relay record is
// created on first use of its name.
func (c *Controller) EnrollmentToken(kind, name string, ttl time.Duration) (string, error) {
	return c.enrollmentToken(context.Background(), "admin", kind, name, ttl)
}

func (c *Controller) enrollmentToken(ctx context.Context, actor, kind, name string, ttl time.Duration) (string, error) {
	if ttl <= 0 {
		ttl = c.cfg.EnrollmentTTL
	}
	if ttl > 30*24*time.Hour {
		return "", fmt.Errorf("%w: ttl %s is longer than 30 days", ErrEnrollment, ttl)
	}
	if err := validObjectName(name); err != nil {
		return "", fmt.Errorf("%w: name %v", ErrEnrollment, err)
	}
	secret := api.RandomHex(32)
	enr := Enrollment{ID: newID(idPrefix(KindEnrollment)), Kind: kind, Name: name, SecretHash: sha256Hex(secret), ExpiresAt: time.Now().Add(ttl).UTC()}
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		switch kind {
		case KindConnector:
			if _, err := tx.GetByName(KindConnector, name); errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("%w: connector %q is not listed under any remote network's connectors: in network.yaml; add it there and apply first", ErrUnknownComponent, name)
			} else if err != nil {
				return err
			}
		case KindRelay:
			if _, err := tx.GetByName(KindRelay, name); errors.Is(err, store.ErrNotFound) {
				rl := Relay{ID: newID(idPrefix(KindRelay)), Name: name}
				o, err := toObject(KindRelay, rl.ID, name, rl)
				if err != nil {
					return err
				}
				if err := tx.Put(o); err != nil {
					return err
				}
				if err := tx.Audit(store.AuditEntry{Actor: actor, Action: "create", Kind: KindRelay, ObjectID: rl.ID, Name: name, After: o.Data}); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: kind %q must be connector or relay", ErrEnrollment, kind)
		}
		o, err := toObject(KindEnrollment, enr.ID, enr.SecretHash, enr)
		if err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: actor, Action: "mint-enrollment-token", Kind: kind, ObjectID: enr.ID, Name: name, After: redact(KindEnrollment, o.Data)})
	})
	if err != nil {
		return "", err
	}
	if err := c.reload(ctx); err != nil {
		return "", err
	}
	return controlapi.EnrollmentToken{Kind: kind, Name: name, ControllerURL: c.issuer, CAFingerprint: c.CAFingerprint(), Secret: secret}.Encode(), nil
}

func (c *Controller) issueCredential(kind, id string, pub any) (controlapi.EnrollResponse, error) {
	cert, err := c.ca.IssueClient(kind+":"+id, pub, c.cfg.CredentialTTL)
	if err != nil {
		return controlapi.EnrollResponse{}, err
	}
	c.met.issued(kind + "_certificate")
	return controlapi.EnrollResponse{ID: id, CertificatePEM: string(pki.EncodeCertPEM(cert)), CAPEM: string(c.CACertPEM()), NotAfter: cert.NotAfter.UTC()}, nil
}

// Enroll redeems the enrollment token req.Secret for a component of kind
// enrolling with key pub (pubPEM its canonical PEM) and issues its first
// certificate (api.Components). On failure it returns the status to answer
// with.
func (c *Controller) Enroll(ctx context.Context, kind string, req controlapi.EnrollRequest, pub any, pubPEM string) (controlapi.EnrollResponse, int, error) {
	var resp controlapi.EnrollResponse
	status := http.StatusUnauthorized
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		o, err := tx.GetByName(KindEnrollment, sha256Hex(req.Secret))
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("%w: unknown enrollment token", ErrEnrollment)
		} else if err != nil {
			status = http.StatusInternalServerError
			return err
		}
		var e Enrollment
		if err := json.Unmarshal(o.Data, &e); err != nil {
			status = http.StatusInternalServerError
			return err
		}
		switch {
		case e.Used:
			return fmt.Errorf("%w: this enrollment token was already used (at %s); mint a new one", ErrEnrollment, e.UsedAt.Format(time.RFC3339))
		case time.Now().After(e.ExpiresAt):
			return fmt.Errorf("%w: this enrollment token expired at %s; mint a new one", ErrEnrollment, e.ExpiresAt.Format(time.RFC3339))
		case e.Kind != kind:
			status = http.StatusBadRequest
			return fmt.Errorf("%w: this is a %s token, not a %s token", ErrEnrollment, e.Kind, kind)
		}
		e.Used, e.UsedAt = true, time.Now().UTC()
		if o, err = toObject(KindEnrollment, e.ID, e.SecretHash, e); err != nil {
			return err
		}
		if err := tx.Put(o); err != nil {
			return err
		}
		co, err := tx.GetByName(kind, e.Name)
		if err != nil {
			status = http.StatusConflict
			gone := "deleted"
			if kind == KindConnector {
				gone = "removed from network.yaml"
			}
			return fmt.Errorf("%w: %s %q was %s after the token was minted", ErrEnrollment, kind, e.Name, gone)
		}
		network, err := setComponentKey(tx, kind, co.ID, pubPEM, &req)
		if err != nil {
			return err
		}
		if resp, err = c.issueCredential(kind, co.ID, pub); err != nil {
			status = http.StatusInternalServerError
			return err
		}
		resp.Name, resp.Network = e.Name, network
		return tx.Audit(store.AuditEntry{Actor: kind + ":" + co.ID, Action: "enroll", Kind: kind, ObjectID: co.ID, Name: e.Name})
	})
	if err != nil {
		return controlapi.EnrollResponse{}, status, err
	}
	if err := c.reload(ctx); err != nil {
		return controlapi.EnrollResponse{}, http.StatusInternalServerError, err
	}
	return resp, http.StatusOK, nil
}

// setComponentKey records pubPEM as the key connector or relay id enrolls
// with from now on; with enrolled (an enrollment, not a renewal) also when
// it enrolled and the host and version it reported. It returns a
// connector's network.
func setComponentKey(tx store.Tx, kind, id, pubPEM string, enrolled *controlapi.EnrollRequest) (network string, err error) {
	now := time.Now().UTC()
	if kind == KindConnector {
		err = updateRecord(tx, kind, id, func(v *Connector) bool {
			v.PublicKeyPEM, network = pubPEM, v.Network
			if enrolled != nil {
				v.EnrolledAt, v.Hostname, v.Version = now, enrolled.Hostname, enrolled.Version
			}
			return true
		})
		return network, err
	}
	return "", updateRecord(tx, kind, id, func(v *Relay) bool {
		v.PublicKeyPEM = pubPEM
		if enrolled != nil {
			v.EnrolledAt, v.Version = now, enrolled.Version
		}
		return true
	})
}

// RenewCredential issues component kind id a new client certificate for
// key pub and, with pubPEM, records the new key it enrolls with from now on
// (api.Components).
func (c *Controller) RenewCredential(ctx context.Context, kind, id string, pub any, pubPEM string) (controlapi.EnrollResponse, error) {
	resp, err := c.issueCredential(kind, id, pub)
	if err != nil {
		return controlapi.EnrollResponse{}, err
	}
	m := c.model()
	if kind == KindConnector {
		resp.Name, resp.Network = m.Connectors[id].Name, m.Connectors[id].Network
	} else {
		resp.Name = m.Relays[id].Name
	}
	if pubPEM != "" {
		err := c.commitReload(ctx, func(tx store.Tx) error {
			if _, err := setComponentKey(tx, kind, id, pubPEM, nil); err != nil {
				return err
			}
			return tx.Audit(store.AuditEntry{Actor: kind + ":" + id, Action: "rekey", Kind: kind, ObjectID: id, Name: resp.Name})
		})
		if err != nil {
			return controlapi.EnrollResponse{}, err
		}
	}
	return resp, nil
}

// ConnectorHeartbeat records a connector's heartbeat: its load, and its
// certificate digests, addresses and version when they changed (a commit,
// which pushes them); it answers with the heartbeat interval
// (api.Components).
func (c *Controller) ConnectorHeartbeat(ctx context.Context, id string, hb controlapi.Heartbeat) (controlapi.HeartbeatResponse, error) {
	digests := hb.CertSHA256
	c.rtMu.Lock()
	c.connSeen[id] = time.Now()
	c.connLoad[id] = hb.Load
	c.rtMu.Unlock()
	c.touchPresence(ctx, KindConnector, id, hb.Load)
	cur := c.model().Connectors[id]
	if cur == nil || !cur.Online || !slices.Equal(cur.CertSHA256, digests) || !slices.Equal(cur.Addrs, hb.Addrs) || cur.Version != hb.Version {
		err := c.commitReload(ctx, func(tx store.Tx) error {
			return updateRecord(tx, KindConnector, id, func(v *Connector) bool {
				if v.Online && slices.Equal(v.CertSHA256, digests) && slices.Equal(v.Addrs, hb.Addrs) && v.Version == hb.Version {
					return false
				}
				v.Online, v.CertSHA256, v.Addrs, v.Version = true, digests, hb.Addrs, hb.Version
				return true
			})
		})
		if err != nil {
			return controlapi.HeartbeatResponse{}, fmt.Errorf("record heartbeat: %w", err)
		}
		c.log.Info("connector heartbeat changed state", "connector", id, "cert_sha256", digests[0], "addrs", hb.Addrs)
	}
	return controlapi.HeartbeatResponse{IntervalSeconds: c.intervalSeconds()}, nil
}

// StoreFlowEvents keeps a batch of connector id's flow events (at most
// Config.MaxEvents are kept) and notes the resources they used, for auto-lock
// (api.Components).
func (c *Controller) StoreFlowEvents(ctx context.Context, id string, events []controlapi.FlowEvent) error {
	evs := make([]store.Event, 0, len(events))
	for _, e := range events {
		e.ConnectorID = id
		b, _ := json.Marshal(e)
		evs = append(evs, store.Event{At: time.Now(), Data: b})
	}
	if err := c.store.AddEvents(ctx, evs, c.cfg.MaxEvents); err != nil {
		return err
	}
	if err := c.recordUse(ctx, events); err != nil {
		c.log.Warn("record resource use for auto-lock", "err", err)
	}
	return nil
}

// RegisterRelay records a relay's stats, and its addresses, certificate
// digest and version when they changed (a commit, which pushes them); it
// answers with the TURN secret, the token keys and the relay policy
// (api.Components).
func (c *Controller) RegisterRelay(ctx context.Context, id string, req controlapi.RelayRegister) (controlapi.RelayRegisterResponse, error) {
	c.rtMu.Lock()
	c.relaySeen[id] = time.Now()
	c.relayStats[id] = req.Stats
	c.rtMu.Unlock()
	c.touchPresence(ctx, KindRelay, id, req.Stats)
	cur := c.model().Relays[id]
	if cur == nil || !cur.Online || cur.UDPAddr != req.UDPAddr || cur.TLSAddr != req.TLSAddr || cur.PublicIP != req.PublicIP || cur.Version != req.Version || cur.TLSCertSHA256 != req.TLSCertSHA256 {
		err := c.commitReload(ctx, func(tx store.Tx) error {
			return updateRecord(tx, KindRelay, id, func(v *Relay) bool {
				v.Online, v.UDPAddr, v.TLSAddr, v.PublicIP, v.Version, v.TLSCertSHA256 = true, req.UDPAddr, req.TLSAddr, req.PublicIP, req.Version, req.TLSCertSHA256
				return true
			})
		})
		if err != nil {
			return controlapi.RelayRegisterResponse{}, fmt.Errorf("register relay: %w", err)
		}
		c.log.Info("relay registered", "relay", id, "udp", req.UDPAddr, "tls", req.TLSAddr)
	}
	pol := c.model().relayPolicy(time.Now())
	return controlapi.RelayRegisterResponse{
		ID: id, TURNSecret: string(c.turnKey), Realm: turnRealm, Issuer: c.issuer, JWKS: c.JWKS(),
		IntervalSeconds: c.intervalSeconds(), Policy: &pol,
	}, nil
}

const turnRealm = "postern"

// TURNCredentials returns REST-style TURN credentials for a component
// (principal "connector:<id>"): username "<unix expiry>:<principal>",
// password base64(HMAC-SHA1(secret, username)).
func (c *Controller) TURNCredentials(principal string) controlapi.TURNCredentials {
	exp := time.Now().Add(c.cfg.TURNCredentialTTL).Truncate(time.Second)
	return c.turnCredentials(controlapi.TURNUsername(exp, principal), exp)
}

// deviceTURNCredentials returns TURN credentials bound to a client device:
// username "<unix expiry>:<principal>/<device>". Relays let such an
// allocation reach only the candidates exchanged in that device's signaling
// sessions, and drop it as soon as the device is revoked (RelayPolicy).
func (c *Controller) deviceTURNCredentials(principal, device string) controlapi.TURNCredentials {
	exp := time.Now().Add(c.cfg.TURNCredentialTTL).Truncate(time.Second)
	return c.turnCredentials(controlapi.TURNDeviceUsername(exp, principal, device), exp)
}

func (c *Controller) turnCredentials(user string, exp time.Time) controlapi.TURNCredentials {
	c.met.issued("turn_credentials")
	return controlapi.TURNCredentials{Username: user, Password: controlapi.TURNPassword(string(c.turnKey), user),
		ExpiresAt: exp.UTC(), Realm: turnRealm, Relays: c.model().relayInfos()}
}

// intervalSeconds is the heartbeat interval asked of components (at least 1 s).
func (c *Controller) intervalSeconds() int {
	return max(1, int(c.cfg.HeartbeatInterval/time.Second))
}
