package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// Admin object paths under /api/v1.
var kindPaths = map[string]string{
	"networks":         KindNetwork,
	"connectors":       KindConnector,
	"relays":           KindRelay,
	"resources":        KindResource,
	"groups":           KindGroup,
	"users":            KindUser,
	"service-accounts": KindServiceAccount,
	"devices":          KindDevice,
	"sessions":         KindSession,
	"posture-profiles": KindPostureProfile,
}

// specKinds are managed declaratively (network.yaml and single-object CRUD).
var specKinds = map[string]bool{KindNetwork: true, KindConnector: true, KindResource: true, KindGroup: true, KindUser: true, KindServiceAccount: true, KindPostureProfile: true}

func (c *Controller) adminRoutes(mux *http.ServeMux) {
	for p, kind := range kindPaths {
		kind := kind
		base := "/api/v1/" + p
		mux.HandleFunc("GET "+base, c.admin(func(w http.ResponseWriter, r *http.Request) { c.handleList(w, r, kind) }))
		mux.HandleFunc("GET "+base+"/{id}", c.admin(func(w http.ResponseWriter, r *http.Request) { c.handleGet(w, r, kind) }))
		mux.HandleFunc("DELETE "+base+"/{id}", c.admin(func(w http.ResponseWriter, r *http.Request) { c.handleDelete(w, r, kind) }))
		if specKinds[kind] {
			mux.HandleFunc("POST "+base, c.admin(func(w http.ResponseWriter, r *http.Request) { c.handleUpsert(w, r, kind, false) }))
			mux.HandleFunc("PUT "+base+"/{id}", c.admin(func(w http.ResponseWriter, r *http.Request) { c.handleUpsert(w, r, kind, true) }))
		}
	}
	mux.HandleFunc("POST /api/v1/apply", c.admin(c.handleApply))
	mux.HandleFunc("GET /api/v1/spec", c.admin(c.handleSpec))
}

// ConnectorView is a connector as the admin API shows it.
type ConnectorView struct {
	Connector
	PublicKeyPEM  string                   `json:"public_key_pem,omitempty"`
	Enrolled      bool                     `json:"enrolled"`
	Load          controlapi.ConnectorLoad `json:"load"`
	LastHeartbeat *time.Time               `json:"last_heartbeat,omitempty"`
}

// RelayView is a relay as the admin API shows it.
type RelayView struct {
	Relay
	PublicKeyPEM  string             `json:"public_key_pem,omitempty"`
	Enrolled      bool               `json:"enrolled"`
	LastHeartbeat *time.Time         `json:"last_heartbeat,omitempty"`
	Stats         map[string]float64 `json:"stats,omitempty"`
}

// UserView is a user without its password hash.
type UserView struct {
	ID          string `json:"id"`
	Email       string `json:"email"`
	Source      string `json:"source,omitempty"`
	Disabled    bool   `json:"disabled,omitempty"`
	HasPassword bool   `json:"has_password"`
	// OIDCSubject and OIDCIssuer: the identity provider subject bound to
	// the account (by its first verified sign-in or by oidc_subject).
	OIDCSubject string `json:"oidc_subject,omitempty"`
	OIDCIssuer  string `json:"oidc_issuer,omitempty"`
}

type serviceKeyView struct {
	KeyID     string    `json:"key_id"`
	Created   time.Time `json:"created"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// ServiceAccountView is a service account without key secrets.
type ServiceAccountView struct {
	ID     string           `json:"id"`
	Name   string           `json:"name"`
	Groups []string         `json:"groups"`
	Keys   []serviceKeyView `json:"keys"`
}

// SessionView is a session without its token hash.
type SessionView struct {
	Session
	TokenHash string          `json:"token_sha256,omitempty"`
	External  json.RawMessage `json:"external,omitempty"`
	Active    bool            `json:"active"`
}

// view renders a stored record for the admin API.
func (c *Controller) view(kind string, data []byte) (any, error) {
	switch kind {
	case KindConnector:
		var v Connector
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		cv := ConnectorView{Connector: v, Enrolled: v.PublicKeyPEM != ""}
		c.rtMu.Lock()
		cv.Load = c.connLoad[v.ID]
		if t, ok := c.connSeen[v.ID]; ok {
			t = t.UTC()
			cv.LastHeartbeat = &t
		}
		c.rtMu.Unlock()
		return cv, nil
	case KindRelay:
		var v Relay
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		rv := RelayView{Relay: v, Enrolled: v.PublicKeyPEM != ""}
		c.rtMu.Lock()
		rv.Stats = c.relayStats[v.ID]
		if t, ok := c.relaySeen[v.ID]; ok {
			t = t.UTC()
			rv.LastHeartbeat = &t
		}
		c.rtMu.Unlock()
		return rv, nil
	case KindUser:
		var v User
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		return UserView{ID: v.ID, Email: v.Email, Source: v.Source, Disabled: v.Disabled, HasPassword: v.PasswordHash != "",
			OIDCSubject: v.IdPSubject, OIDCIssuer: v.IdPIssuer}, nil
	case KindServiceAccount:
		var v ServiceAccount
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		sv := ServiceAccountView{ID: v.ID, Name: v.Name, Groups: strs(v.Groups), Keys: []serviceKeyView{}}
		for _, k := range v.Keys {
			sv.Keys = append(sv.Keys, serviceKeyView{KeyID: k.KeyID, Created: k.Created, ExpiresAt: k.ExpiresAt})
		}
		return sv, nil
	case KindSession:
		var v Session
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		_, active := c.model().Sessions[v.TokenHash]
		return SessionView{Session: v, Active: active}, nil
	}
	return json.RawMessage(data), nil
}

// ListResponse is one page of a list.
type ListResponse struct {
	Items      []any  `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

func (c *Controller) handleList(w http.ResponseWriter, r *http.Request, kind string) {
	limit, cursor, ok := api.PageParams(w, r)
	if !ok {
		return
	}
	objs, err := c.store.Page(r.Context(), kind, cursor, limit+1)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	resp := ListResponse{Items: []any{}}
	if len(objs) > limit {
		objs = objs[:limit]
		resp.NextCursor = objs[limit-1].ID
	}
	for _, o := range objs {
		v, err := c.view(kind, o.Data)
		if err != nil {
			api.WriteError(w, http.StatusInternalServerError, "%v", err)
			return
		}
		resp.Items = append(resp.Items, v)
	}
	api.WriteJSON(w, http.StatusOK, resp)
}

// lookup finds an object by id, or else by name.
func (c *Controller) lookup(ctx context.Context, kind, key string) (store.Object, error) {
	var o store.Object
	err := c.store.View(ctx, func(tx store.Tx) error {
		var err error
		if o, err = tx.Get(kind, key); errors.Is(err, store.ErrNotFound) {
			o, err = tx.GetByName(kind, key)
		}
		return err
	})
	return o, err
}

func (c *Controller) handleGet(w http.ResponseWriter, r *http.Request, kind string) {
	o, err := c.lookup(r.Context(), kind, r.PathValue("id"))
	if err != nil {
		writeStoreError(w, kind, r.PathValue("id"), err)
		return
	}
	v, err := c.view(kind, o.Data)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, v)
}

func writeStoreError(w http.ResponseWriter, kind, key string, err error) {
	var ve ValidationErrors
	switch {
	case errors.Is(err, store.ErrNotFound):
		api.WriteError(w, http.StatusNotFound, "%s %q not found", kind, key)
	case errors.As(err, &ve), errors.Is(err, ErrInvalidSpec), errors.Is(err, errSpecMutation):
		api.WriteError(w, http.StatusBadRequest, "%v", err)
	case errors.Is(err, store.ErrConflict):
		api.WriteError(w, http.StatusConflict, "%v", err)
	default:
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
	}
}

func (c *Controller) handleDelete(w http.ResponseWriter, r *http.Request, kind string) {
	key := r.PathValue("id")
	o, err := c.lookup(r.Context(), kind, key)
	if err != nil {
		writeStoreError(w, kind, key, err)
		return
	}
	switch kind {
	case KindDevice:
		err = c.revokeDevice(r.Context(), "admin", o.ID)
	case KindSession:
		// Revoking a session ends that device's access everywhere.
		var s Session
		if err = json.Unmarshal(o.Data, &s); err == nil {
			if err = c.revokeSession(r.Context(), "admin", o.ID); err == nil {
				err = c.revokeDevice(r.Context(), "admin", s.DeviceID)
			}
		}
	case KindRelay:
		_, _, err = c.commit(r.Context(), func(tx store.Tx) error {
			if err := tx.Delete(kind, o.ID); err != nil {
				return err
			}
			return tx.Audit(store.AuditEntry{Actor: "admin", Action: "delete", Kind: kind, ObjectID: o.ID, Name: o.Name, Before: redact(kind, o.Data)})
		})
		if err == nil {
			err = c.reload(r.Context())
		}
	default:
		_, err = c.mutateSpec(r.Context(), "admin", func(s *Spec) error { return removeFromSpec(s, kind, o.Name) })
	}
	if err != nil {
		writeStoreError(w, kind, key, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func removeFromSpec(s *Spec, kind, name string) error {
	switch kind {
	case KindNetwork:
		s.RemoteNetworks = slices.DeleteFunc(s.RemoteNetworks, func(n NetworkSpec) bool { return n.Name == name })
	case KindConnector:
		for i := range s.RemoteNetworks {
			s.RemoteNetworks[i].Connectors = slices.DeleteFunc(s.RemoteNetworks[i].Connectors, func(c string) bool { return c == name })
		}
	case KindGroup:
		s.Groups = slices.DeleteFunc(s.Groups, func(g GroupSpec) bool { return g.Name == name })
	case KindUser:
		s.Users = slices.DeleteFunc(s.Users, func(u UserSpec) bool { return u.Email == name })
		for i := range s.Groups {
			s.Groups[i].Users = slices.DeleteFunc(s.Groups[i].Users, func(e string) bool { return e == name })
		}
	case KindServiceAccount:
		s.ServiceAccounts = slices.DeleteFunc(s.ServiceAccounts, func(a ServiceAccountSpec) bool { return a.Name == name })
	case KindResource:
		s.Resources = slices.DeleteFunc(s.Resources, func(r ResourceSpec) bool { return r.Name == name })
	case KindPostureProfile:
		s.PostureProfiles = slices.DeleteFunc(s.PostureProfiles, func(p PostureProfileSpec) bool { return p.Name == name })
	default:
		return fmt.Errorf("%w %s objects", errSpecMutation, kind)
	}
	return nil
}

// connectorBody is the admin API body of a connector.
type connectorBody struct {
	Name    string `json:"name"`
	Network string `json:"network"`
}

func (c *Controller) handleUpsert(w http.ResponseWriter, r *http.Request, kind string, update bool) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		api.WriteError(w, http.StatusRequestEntityTooLarge, "request body: %v", err)
		return
	}
	strict := func(v any) error {
		dec := json.NewDecoder(bytesReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			return fmt.Errorf("%w: request body: %v", ErrInvalidSpec, err)
		}
		return nil
	}
	oldName := ""
	if update {
		o, err := c.lookup(r.Context(), kind, r.PathValue("id"))
		if err != nil {
			writeStoreError(w, kind, r.PathValue("id"), err)
			return
		}
		oldName = o.Name
	}
	var name string
	var mutate func(s *Spec) error
	switch kind {
	case KindNetwork:
		var v NetworkSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				if update && oldName != v.Name {
					for i := range s.Resources {
						if s.Resources[i].Network == oldName {
							s.Resources[i].Network = v.Name
						}
					}
				}
				s.RemoteNetworks = upsertBy(s.RemoteNetworks, oldName, v, func(n NetworkSpec) string { return n.Name })
				return nil
			}
		}
	case KindConnector:
		var v connectorBody
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				if err := removeFromSpec(s, KindConnector, oldName); err != nil {
					return err
				}
				for i := range s.RemoteNetworks {
					if s.RemoteNetworks[i].Name == v.Network {
						s.RemoteNetworks[i].Connectors = append(s.RemoteNetworks[i].Connectors, v.Name)
						return nil
					}
				}
				return ValidationErrors{{Path: "connector", Field: "network", Msg: fmt.Sprintf("unknown remote network %q", v.Network)}}
			}
		}
	case KindGroup:
		var v GroupSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				if update && oldName != v.Name {
					renameRefs(s, oldName, v.Name)
				}
				s.Groups = upsertBy(s.Groups, oldName, v, func(g GroupSpec) string { return g.Name })
				return nil
			}
		}
	case KindUser:
		var v UserSpec
		if err = strict(&v); err == nil {
			name = v.Email
			if v.Password != "" {
				if v.PasswordHash, err = hashPassword(v.Password); err != nil {
					break
				}
				v.Password = ""
			}
			mutate = func(s *Spec) error {
				if v.PasswordHash == "" && update {
					// Keep the current password when none is given.
					for _, u := range s.Users {
						if u.Email == oldName {
							v.PasswordHash = u.PasswordHash
						}
					}
				}
				s.Users = upsertBy(s.Users, oldName, v, func(u UserSpec) string { return u.Email })
				return nil
			}
		}
	case KindServiceAccount:
		var v ServiceAccountSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				s.ServiceAccounts = upsertBy(s.ServiceAccounts, oldName, v, func(a ServiceAccountSpec) string { return a.Name })
				return nil
			}
		}
	case KindResource:
		var v ResourceSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				s.Resources = upsertBy(s.Resources, oldName, v, func(x ResourceSpec) string { return x.Name })
				return nil
			}
		}
	case KindPostureProfile:
		var v PostureProfileSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				if update && oldName != v.Name {
					for i := range s.Resources {
						if q := s.Resources[i].Require; q != nil {
							for j, p := range q.Posture {
								if p == oldName {
									q.Posture[j] = v.Name
								}
							}
						}
					}
				}
				s.PostureProfiles = upsertBy(s.PostureProfiles, oldName, v, func(x PostureProfileSpec) string { return x.Name })
				return nil
			}
		}
	}
	if err != nil {
		writeStoreError(w, kind, name, err)
		return
	}
	if !update || name != oldName {
		if _, err := c.lookup(r.Context(), kind, name); err == nil {
			api.WriteError(w, http.StatusConflict, "%s %q already exists", kind, name)
			return
		}
	}
	if _, err := c.mutateSpec(r.Context(), "admin", mutate); err != nil {
		writeStoreError(w, kind, name, err)
		return
	}
	o, err := c.lookup(r.Context(), kind, name)
	if err != nil {
		writeStoreError(w, kind, name, err)
		return
	}
	v, err := c.view(kind, o.Data)
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	status := http.StatusCreated
	if update {
		status = http.StatusOK
	}
	api.WriteJSON(w, status, v)
}

// renameRefs renames group references.
func renameRefs(s *Spec, old, new string) {
	for i := range s.Resources {
		for j, g := range s.Resources[i].Groups {
			if g == old {
				s.Resources[i].Groups[j] = new
			}
		}
	}
	for i := range s.ServiceAccounts {
		for j, g := range s.ServiceAccounts[i].Groups {
			if g == old {
				s.ServiceAccounts[i].Groups[j] = new
			}
		}
	}
	for i := range s.Resources {
		if q := s.Resources[i].Require; q != nil && q.Approval != nil {
			for j, g := range q.Approval.Approvers {
				if g == old {
					q.Approval.Approvers[j] = new
				}
			}
		}
	}
}

// upsertBy replaces the element named old (or appends v when old is empty).
func upsertBy[T any](list []T, old string, v T, name func(T) string) []T {
	if old != "" {
		for i := range list {
			if name(list[i]) == old {
				list[i] = v
				return list
			}
		}
	}
	return append(list, v)
}

func (c *Controller) handleApply(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		api.WriteError(w, http.StatusRequestEntityTooLarge, "request body: %v", err)
		return
	}
	dry := r.URL.Query().Get("dry_run")
	plan, err := c.applyYAML(r.Context(), "admin", body, dry == "1" || dry == "true")
	if err != nil {
		writeStoreError(w, "configuration", "", err)
		return
	}
	if !plan.DryRun {
		c.noteAppliedFile(r.Context(), body) // the console shows what a file manages
	}
	api.WriteJSON(w, http.StatusOK, plan)
}

func (c *Controller) handleSpec(w http.ResponseWriter, r *http.Request) {
	var spec *Spec
	err := c.store.View(r.Context(), func(tx store.Tx) error {
		var err error
		spec, err = specFromTx(tx)
		return err
	})
	if err != nil {
		api.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	api.WriteJSON(w, http.StatusOK, spec)
}
