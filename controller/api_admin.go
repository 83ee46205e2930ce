package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"postern.dev/postern/controller/adminapi"
	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// view renders a stored record for the admin API.
func (c *Controller) view(kind string, data []byte) (any, error) {
	switch kind {
	case KindConnector:
		var v Connector
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		cv := adminapi.ConnectorView{Connector: v, Enrolled: v.PublicKeyPEM != ""}
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
		rv := adminapi.RelayView{Relay: v, Enrolled: v.PublicKeyPEM != ""}
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
		return adminapi.UserView{ID: v.ID, Email: v.Email, Source: v.Source, Disabled: v.Disabled, HasPassword: v.PasswordHash != "",
			OIDCSubject: v.IdPSubject, OIDCIssuer: v.IdPIssuer}, nil
	case KindServiceAccount:
		var v ServiceAccount
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		sv := adminapi.ServiceAccountView{ID: v.ID, Name: v.Name, Groups: strs(v.Groups), Keys: []adminapi.ServiceKeyView{}}
		for _, k := range v.Keys {
			sv.Keys = append(sv.Keys, adminapi.ServiceKeyView{KeyID: k.KeyID, Created: k.Created, ExpiresAt: k.ExpiresAt})
		}
		return sv, nil
	case KindSession:
		var v Session
		if err := json.Unmarshal(data, &v); err != nil {
			return nil, err
		}
		_, active := c.model().Sessions[v.TokenHash]
		return adminapi.SessionView{Session: v, Active: active}, nil
	}
	return json.RawMessage(data), nil
}

// ListResponse is one page of a list (package api).
type ListResponse = api.ListResponse

// ListObjects is one page of objects of kind after cursor, as the admin
// API shows them, and the next page's cursor (api.Objects).
func (c *Controller) ListObjects(ctx context.Context, kind, cursor string, limit int) ([]any, string, error) {
	objs, err := c.store.Page(ctx, kind, cursor, limit+1)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(objs) > limit {
		objs = objs[:limit]
		next = objs[limit-1].ID
	}
	items := make([]any, 0, len(objs))
	for _, o := range objs {
		v, err := c.view(kind, o.Data)
		if err != nil {
			return nil, "", err
		}
		items = append(items, v)
	}
	return items, next, nil
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

// GetObject is the object of kind with id or name key as the admin API
// shows it (api.Objects).
func (c *Controller) GetObject(ctx context.Context, kind, key string) (any, error) {
	o, err := c.lookup(ctx, kind, key)
	if err != nil {
		return nil, &api.ObjectError{Kind: kind, Key: key, Err: err}
	}
	return c.view(kind, o.Data)
}

// DeleteObject removes the object of kind with id or name key: a device or
// session is revoked, a relay deleted, a declared object removed from the
// configuration (api.Objects).
func (c *Controller) DeleteObject(ctx context.Context, kind, key string) error {
	o, err := c.lookup(ctx, kind, key)
	if err != nil {
		return &api.ObjectError{Kind: kind, Key: key, Err: err}
	}
	switch kind {
	case KindDevice:
		err = c.revokeDevice(ctx, "admin", o.ID)
	case KindSession:
		// Revoking a session ends that device's access everywhere.
		var s Session
		if err = json.Unmarshal(o.Data, &s); err == nil {
			if err = c.revokeSession(ctx, "admin", o.ID); err == nil {
				err = c.revokeDevice(ctx, "admin", s.DeviceID)
			}
		}
	case KindRelay:
		err = c.commitReload(ctx, func(tx store.Tx) error {
			if err := tx.Delete(kind, o.ID); err != nil {
				return err
			}
			return tx.Audit(store.AuditEntry{Actor: "admin", Action: "delete", Kind: kind, ObjectID: o.ID, Name: o.Name, Before: redact(kind, o.Data)})
		})
	default:
		_, err = c.mutateSpec(ctx, "admin", func(s *Spec) error { return removeFromSpec(s, kind, o.Name) })
	}
	if err != nil {
		return &api.ObjectError{Kind: kind, Key: key, Err: err}
	}
	return nil
}

func removeFromSpec(s *Spec, kind, name string) error {
	switch kind {
	case KindNetwork:
		s.RemoteNetworks = slices.DeleteFunc(s.RemoteNetworks, func(n adminapi.NetworkSpec) bool { return n.Name == name })
	case KindConnector:
		for i := range s.RemoteNetworks {
			s.RemoteNetworks[i].Connectors = slices.DeleteFunc(s.RemoteNetworks[i].Connectors, func(c string) bool { return c == name })
		}
	case KindGroup:
		s.Groups = slices.DeleteFunc(s.Groups, func(g adminapi.GroupSpec) bool { return g.Name == name })
	case KindUser:
		s.Users = slices.DeleteFunc(s.Users, func(u adminapi.UserSpec) bool { return u.Email == name })
		for i := range s.Groups {
			s.Groups[i].Users = slices.DeleteFunc(s.Groups[i].Users, func(e string) bool { return e == name })
		}
	case KindServiceAccount:
		s.ServiceAccounts = slices.DeleteFunc(s.ServiceAccounts, func(a adminapi.ServiceAccountSpec) bool { return a.Name == name })
	case KindResource:
		s.Resources = slices.DeleteFunc(s.Resources, func(r adminapi.ResourceSpec) bool { return r.Name == name })
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

// UpsertObject creates (update false) or replaces the declared object of
// kind with id or name key from its JSON body, and returns its view
// (api.Objects).
func (c *Controller) UpsertObject(ctx context.Context, kind, key string, update bool, body []byte) (any, error) {
	var err error
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
		o, err := c.lookup(ctx, kind, key)
		if err != nil {
			return nil, &api.ObjectError{Kind: kind, Key: key, Err: err}
		}
		oldName = o.Name
	}
	var name string
	var mutate func(s *Spec) error
	switch kind {
	case KindNetwork:
		var v adminapi.NetworkSpec
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
				s.RemoteNetworks = adminapi.Upsert(s.RemoteNetworks, oldName, v, func(n adminapi.NetworkSpec) string { return n.Name })
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
		var v adminapi.GroupSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				if update && oldName != v.Name {
					renameRefs(s, oldName, v.Name)
				}
				s.Groups = adminapi.Upsert(s.Groups, oldName, v, func(g adminapi.GroupSpec) string { return g.Name })
				return nil
			}
		}
	case KindUser:
		var v adminapi.UserSpec
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
				s.Users = adminapi.Upsert(s.Users, oldName, v, func(u adminapi.UserSpec) string { return u.Email })
				return nil
			}
		}
	case KindServiceAccount:
		var v adminapi.ServiceAccountSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				s.ServiceAccounts = adminapi.Upsert(s.ServiceAccounts, oldName, v, func(a adminapi.ServiceAccountSpec) string { return a.Name })
				return nil
			}
		}
	case KindResource:
		var v adminapi.ResourceSpec
		if err = strict(&v); err == nil {
			name = v.Name
			mutate = func(s *Spec) error {
				s.Resources = adminapi.Upsert(s.Resources, oldName, v, func(x adminapi.ResourceSpec) string { return x.Name })
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
				s.PostureProfiles = adminapi.Upsert(s.PostureProfiles, oldName, v, func(x PostureProfileSpec) string { return x.Name })
				return nil
			}
		}
	}
	if err != nil {
		return nil, &api.ObjectError{Kind: kind, Key: name, Err: err}
	}
	if !update || name != oldName {
		if _, err := c.lookup(ctx, kind, name); err == nil {
			return nil, &api.ObjectError{Kind: kind, Key: name, Err: existsError{kind, name}}
		}
	}
	if _, err := c.mutateSpec(ctx, "admin", mutate); err != nil {
		return nil, &api.ObjectError{Kind: kind, Key: name, Err: err}
	}
	o, err := c.lookup(ctx, kind, name)
	if err != nil {
		return nil, &api.ObjectError{Kind: kind, Key: name, Err: err}
	}
	return c.view(kind, o.Data)
}

// existsError is a new object's name already taken (409).
type existsError struct{ kind, name string }

func (e existsError) Error() string { return fmt.Sprintf("%s %q already exists", e.kind, e.name) }
func (e existsError) Unwrap() error { return store.ErrConflict }

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

// Apply reconciles the model with a configuration file, or only plans it
// (dryRun), as the admin; an applied file is kept for the console, which
// shows what a file manages (api.Objects).
func (c *Controller) Apply(ctx context.Context, file []byte, dryRun bool) (any, error) {
	plan, err := c.applyYAML(ctx, "admin", file, dryRun)
	if err != nil {
		return nil, err
	}
	if !plan.DryRun {
		c.noteAppliedFile(ctx, file)
	}
	return plan, nil
}

// CurrentSpec is the declared configuration the model holds (api.Objects).
func (c *Controller) CurrentSpec(ctx context.Context) (any, error) {
	var spec *Spec
	err := c.store.View(ctx, func(tx store.Tx) error {
		var err error
		spec, err = specFromTx(tx)
		return err
	})
	if err != nil {
		return nil, err
	}
	return spec, nil
}
