package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"postern.dev/postern/controller/store"
)

// A session lives only as long as the credential it was signed in with:
// each session records that credential (Session.Credential), and a session
// whose credential was changed, removed or has expired is refused at once
// (Model.credentialProblem) and revoked in the store by sweepSessions, in the
// same transaction as the change (apply, the admin API, service key
// deletion) or, for expiries, by the monitor loop within half a second.
// Revoked sessions put their device in every connector's RevokedDevices
// (unless it holds another live session), so connectors close its flows as
// for any revocation.

// Credential kinds (the part of Session.Credential before the first colon).
const (
	credPassword   = "password"
	credServiceKey = "service_key"
	credRemoved    = "removed" // backfilled sessions whose credential no longer exists
)

// passwordCredential names a password by a digest of its stored hash (which
// is salted, so setting the same password again is a change too).
func passwordCredential(hash string) string { return credPassword + ":" + sha256Hex(hash)[:32] }

func serviceKeyCredential(keyID string) string { return credServiceKey + ":" + keyID }

// externalCredential names an identity at an external provider.
func externalCredential(method, issuer, subject string) string {
	return method + ":" + issuer + "#" + subject
}

// now is the controller's clock (Config.Now).
func (c *Controller) now() time.Time { return c.cfg.Now() }

type ctxKey int

// credentialProblem says why session s may no longer be used ("" when it
// may), judged against the principal records of m at time now.
func (m *Model) credentialProblem(s *Session, now time.Time) string {
	return credentialProblem(s, m.Users[s.PrincipalID], m.ServiceAccounts[s.PrincipalID], now)
}

func credentialProblem(s *Session, u *User, sa *ServiceAccount, now time.Time) string {
	if !now.Before(s.ExpiresAt) {
		return "expired"
	}
	if u == nil && sa == nil {
		return "account removed"
	}
	if s.Credential == "" {
		return "" // made before credentials were recorded and not backfilled
	}
	kind, rest, _ := strings.Cut(s.Credential, ":")
	switch kind {
	case credRemoved:
		return "credential removed"
	case credPassword:
		if u == nil || u.PasswordHash == "" {
			return "password removed"
		}
		if passwordCredential(u.PasswordHash) != s.Credential {
			return "password changed"
		}
	case credServiceKey:
		if sa == nil {
			return "service account removed"
		}
		for _, k := range sa.Keys {
			if k.KeyID == rest {
				if !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
					return "service key expired"
				}
				return ""
			}
		}
		return "service key deleted"
	default:
		if u == nil || u.IdPSubject == "" {
			return "identity provider binding removed"
		}
		// An issuer holds no "#" (it is a URL without fragment); an
		// administrator's binding names no issuer until its first sign-in.
		iss, sub, _ := strings.Cut(rest, "#")
		if sub != u.IdPSubject || (u.IdPIssuer != "" && u.IdPIssuer != iss) {
			return "identity provider binding changed"
		}
	}
	return ""
}

// sweepSessions revokes, in tx, every live session whose credential was
// changed, removed or expired, with an audit entry naming the reason. It
// returns how many it revoked.
func sweepSessions(tx store.Tx, actor string, now time.Time) (int, error) {
	var sessions []Session
	if err := listInto(tx, KindSession, &sessions); err != nil {
		return 0, err
	}
	live := sessions[:0]
	for _, s := range sessions {
		if !s.Revoked {
			live = append(live, s)
		}
	}
	if len(live) == 0 {
		return 0, nil
	}
	var users []User
	var sas []ServiceAccount
	if err := listInto(tx, KindUser, &users); err != nil {
		return 0, err
	}
	if err := listInto(tx, KindServiceAccount, &sas); err != nil {
		return 0, err
	}
	userByID := make(map[string]*User, len(users))
	for i := range users {
		userByID[users[i].ID] = &users[i]
	}
	saByID := make(map[string]*ServiceAccount, len(sas))
	for i := range sas {
		saByID[sas[i].ID] = &sas[i]
	}
	n := 0
	for i := range live {
		s := &live[i]
		reason := credentialProblem(s, userByID[s.PrincipalID], saByID[s.PrincipalID], now)
		if reason == "" {
			continue
		}
		s.Revoked, s.RevokedAt, s.RevokeReason = true, now.UTC(), reason
		o, err := toObject(KindSession, s.ID, s.ID, s)
		if err != nil {
			return n, err
		}
		if err := tx.Put(o); err != nil {
			return n, err
		}
		after, _ := json.Marshal(map[string]string{"reason": reason, "device": s.DeviceID, "principal": s.PrincipalID})
		if err := tx.Audit(store.AuditEntry{Actor: actor, Action: "revoke", Kind: KindSession, ObjectID: s.ID, Name: s.ID,
			Device: s.DeviceID, After: after}); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// sweepDue reports whether a live session in m has reached its expiry or
// its service key's (the monitor loop then runs sweepSessions). Other
// credential changes are swept in the transaction that makes them.
func (m *Model) sweepDue(now time.Time) bool {
	for _, s := range m.SessionByID {
		if s.Revoked {
			continue
		}
		if !now.Before(s.ExpiresAt) {
			return true
		}
		if keyID, ok := strings.CutPrefix(s.Credential, credServiceKey+":"); ok {
			if sa := m.ServiceAccounts[s.PrincipalID]; sa != nil {
				for _, k := range sa.Keys {
					if k.KeyID == keyID && !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt) {
						return true
					}
				}
			}
		}
	}
	return false
}

// sweepExpired revokes sessions that reached their own or their
// credential's expiry.
func (c *Controller) sweepExpired(ctx context.Context) {
	now := c.now()
	if !c.model().sweepDue(now) {
		return
	}
	var n int
	_, _, err := c.commit(ctx, func(tx store.Tx) error {
		var err error
		n, err = sweepSessions(tx, "controller", now)
		return err
	})
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("revoke expired sessions", "err", err)
		}
		return
	}
	if n > 0 {
		c.log.Info("sessions ended with their credential", "count", n)
	}
}

// backfillCredentials records the credential of sessions made before
// sessions recorded one: a password session gets the current password, a
// service key session the newest key made before it (of those that still
// exist), an external session the user's current binding.
func backfillCredentials(ctx context.Context, st store.Store) error {
	_, _, err := st.Update(ctx, func(tx store.Tx) error {
		var sessions []Session
		if err := listInto(tx, KindSession, &sessions); err != nil {
			return err
		}
		for _, s := range sessions {
			if s.Credential != "" || s.Revoked {
				continue
			}
			cred := ""
			switch s.Method {
			case "password":
				var u User
				if o, err := tx.Get(KindUser, s.PrincipalID); err == nil && json.Unmarshal(o.Data, &u) == nil && u.PasswordHash != "" {
					cred = passwordCredential(u.PasswordHash)
				}
			case "service_key":
				var sa ServiceAccount
				if o, err := tx.Get(KindServiceAccount, s.PrincipalID); err == nil && json.Unmarshal(o.Data, &sa) == nil {
					var best *ServiceKeyRec
					for i, k := range sa.Keys {
						if !k.Created.After(s.Created) && (best == nil || k.Created.After(best.Created)) {
							best = &sa.Keys[i]
						}
					}
					if best != nil {
						cred = serviceKeyCredential(best.KeyID)
					}
				}
			default:
				var u User
				if o, err := tx.Get(KindUser, s.PrincipalID); err == nil && json.Unmarshal(o.Data, &u) == nil && u.IdPSubject != "" {
					cred = externalCredential(s.Method, u.IdPIssuer, u.IdPSubject)
				}
			}
			if cred == "" {
				cred = credRemoved + ":" + s.Method // nothing it could have come from is left: the sweep revokes it
			}
			if err := updateRecord(tx, KindSession, s.ID, func(v *Session) bool { v.Credential = cred; return true }); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record session credentials: %w", err)
	}
	return nil
}
