// Admin API for credentials: enrollment tokens for connectors and relays
// (POST /api/v1/connector-tokens, /relay-tokens, /relays) and service
// account keys (POST and DELETE /api/v1/service-accounts/{id}/keys).

package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// MintRequest is the body of POST /api/v1/connector-tokens and /relay-tokens.
type MintRequest struct {
	Name       string `json:"name"`
	TTLSeconds int    `json:"ttl_seconds,omitempty"`
}

// MintResponse carries a printed enrollment token.
type MintResponse struct {
	Token     string    `json:"token"`
	Kind      string    `json:"kind"`
	Name      string    `json:"name"`
	ExpiresAt time.Time `json:"expires_at"`
}

// handleMint prints an enrollment token for the connector or relay named in
// the body; without token (POST /api/v1/relays) it answers with the relay and
// its token.
func (c *Controller) handleMint(w http.ResponseWriter, r *http.Request, kind string, token bool) {
	var req MintRequest
	if !api.DecodeJSON(w, r, &req) {
		return
	}
	if req.TTLSeconds < 0 {
		api.WriteError(w, http.StatusBadRequest, "ttl_seconds: must be positive")
		return
	}
	ttl := time.Duration(req.TTLSeconds) * time.Second
	if ttl == 0 {
		ttl = c.cfg.EnrollmentTTL
	}
	tok, err := c.enrollmentToken(r.Context(), "admin", kind, req.Name, ttl)
	if err != nil {
		switch {
		case errors.Is(err, ErrUnknownComponent):
			api.WriteError(w, http.StatusNotFound, "name: %v", err)
		case errors.Is(err, ErrEnrollment):
			api.WriteError(w, http.StatusBadRequest, "%v", err)
		default:
			api.WriteError(w, http.StatusInternalServerError, "%v", err)
		}
		return
	}
	if !token {
		o, err := c.lookup(r.Context(), kind, req.Name)
		if err != nil {
			writeStoreError(w, kind, req.Name, err)
			return
		}
		v, _ := c.view(kind, o.Data)
		api.WriteJSON(w, http.StatusCreated, map[string]any{"relay": v, "enrollment_token": tok})
		return
	}
	api.WriteJSON(w, http.StatusCreated, MintResponse{Token: tok, Kind: kind, Name: req.Name, ExpiresAt: time.Now().Add(ttl).UTC()})
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
	secret := randomHex(32)
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

// handleServiceKey is POST /api/v1/service-accounts/{id}/keys.
func (c *Controller) handleServiceKey(w http.ResponseWriter, r *http.Request) {
	var req struct {
		TTLSeconds int `json:"ttl_seconds,omitempty"`
	}
	if r.ContentLength != 0 && !api.DecodeJSON(w, r, &req) {
		return
	}
	k, err := c.CreateServiceKey(r.Context(), r.PathValue("id"), time.Duration(req.TTLSeconds)*time.Second)
	if err != nil {
		writeStoreError(w, KindServiceAccount, r.PathValue("id"), err)
		return
	}
	api.WriteJSON(w, http.StatusCreated, k)
}

// handleDeleteServiceKey is DELETE /api/v1/service-accounts/{id}/keys/{key}.
func (c *Controller) handleDeleteServiceKey(w http.ResponseWriter, r *http.Request) {
	o, err := c.lookup(r.Context(), KindServiceAccount, r.PathValue("id"))
	if err != nil {
		writeStoreError(w, KindServiceAccount, r.PathValue("id"), err)
		return
	}
	keyID := r.PathValue("key")
	found := false
	_, _, err = c.commit(r.Context(), func(tx store.Tx) error {
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
	if err == nil {
		err = c.reload(r.Context())
	}
	if err != nil {
		writeStoreError(w, "service account key", keyID, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
