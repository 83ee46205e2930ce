// Admin API for credentials: enrollment tokens for connectors and relays
// (POST /api/v1/connector-tokens, /relay-tokens, /relays) and service
// account keys (POST and DELETE /api/v1/service-accounts/{id}/keys).

package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// Bodies of the enrollment token endpoints, defined with their handlers in
// package api.
type (
	MintRequest  = api.MintRequest
	MintResponse = api.MintResponse
)

// MintEnrollmentToken is EnrollmentToken for the admin API: it returns the
// ttl it used too (api.Credentials).
func (c *Controller) MintEnrollmentToken(ctx context.Context, kind, name string, ttl time.Duration) (string, time.Duration, error) {
	if ttl == 0 {
		ttl = c.cfg.EnrollmentTTL
	}
	tok, err := c.enrollmentToken(ctx, "admin", kind, name, ttl)
	return tok, ttl, err
}

// ObjectView is the object of kind with id or name key as the admin API
// shows it; an object that no longer decodes shows as nil (api.Credentials).
func (c *Controller) ObjectView(ctx context.Context, kind, key string) (any, error) {
	o, err := c.lookup(ctx, kind, key)
	if err != nil {
		return nil, err
	}
	v, _ := c.view(kind, o.Data)
	return v, nil
}

// BadInput reports whether err is invalid input to the admin API: a
// validation failure of a spec or of the model (api.Credentials).
func (c *Controller) BadInput(err error) bool {
	var ve ValidationErrors
	return errors.As(err, &ve) || errors.Is(err, ErrInvalidSpec) || errors.Is(err, errSpecMutation)
}

// serviceKeyType is the "type" of a service key file.
const serviceKeyType = "postern-service-key"

// CreateServiceKey makes a new key for the service account named or with id
// account and returns its key file contents (the secret is shown only once).
func (c *Controller) CreateServiceKey(ctx context.Context, account string, ttl time.Duration) (*controlapi.ServiceKey, error) {
	o, err := c.lookup(ctx, KindServiceAccount, account)
	if err != nil {
		return nil, fmt.Errorf("service account %q: %w", account, err)
	}
	secret := api.RandomHex(32)
	key := ServiceKeyRec{KeyID: newID("key"), SecretHash: sha256Hex(secret), Created: c.now().UTC()}
	if ttl > 0 {
		key.ExpiresAt = key.Created.Add(ttl)
	}
	_, _, err = c.commit(ctx, func(tx store.Tx) error {
		if err := updateRecord(tx, KindServiceAccount, o.ID, func(v *ServiceAccount) bool { v.Keys = append(v.Keys, key); return true }); err != nil {
			return err
		}
		return tx.Audit(store.AuditEntry{Actor: "admin", Action: "create-key", Kind: KindServiceAccount, ObjectID: o.ID, Name: o.Name, After: json.RawMessage(strconv.Quote(key.KeyID))})
	})
	if err != nil {
		return nil, err
	}
	if err := c.reload(ctx); err != nil {
		return nil, err
	}
	return &controlapi.ServiceKey{Type: serviceKeyType, AccountID: o.ID, KeyID: key.KeyID, Secret: secret, Controller: c.issuer}, nil
}

// DeleteServiceKey removes key keyID of the service account named or with
// id account and ends the sessions it opened; its errors are
// *api.ObjectError, naming the account or the key (api.Credentials).
func (c *Controller) DeleteServiceKey(ctx context.Context, account, keyID string) error {
	o, err := c.lookup(ctx, KindServiceAccount, account)
	if err != nil {
		return &api.ObjectError{Kind: KindServiceAccount, Key: account, Err: err}
	}
	found := false
	err = c.commitReload(ctx, func(tx store.Tx) error {
		if err := updateRecord(tx, KindServiceAccount, o.ID, func(v *ServiceAccount) bool {
			n := len(v.Keys)
			v.Keys = slices.DeleteFunc(v.Keys, func(k ServiceKeyRec) bool { return k.KeyID == keyID })
			found = len(v.Keys) != n
			return found
		}); err != nil {
			return err
		}
		if !found {
			return store.ErrNotFound
		}
		if err := tx.Audit(store.AuditEntry{Actor: "admin", Action: "delete-key", Kind: KindServiceAccount, ObjectID: o.ID, Name: o.Name, Before: json.RawMessage(strconv.Quote(keyID))}); err != nil {
			return err
		}
		_, err := sweepSessions(tx, "admin", c.now())
		return err
	})
	if err != nil {
		return &api.ObjectError{Kind: "service account key", Key: keyID, Err: err}
	}
	return nil
}
