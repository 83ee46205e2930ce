// Package store is the controller's persistence layer: a narrow, transactional
// object store (kind, id, unique name, JSON data) with a monotonically
// increasing revision, an admin audit log and a flow-event log. The default
// backend is SQLite through modernc.org/sqlite (pure Go, one controller
// process). The PostgreSQL backend (OpenPostgres, through pgx) implements the
// same interface for several controller replicas sharing one database:
// commits NOTIFY the new revision and every replica's Watch LISTENs for it.
// Both backends take their schema from versioned SQL files under
// migrations/<dialect>/.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// Sentinel errors.
var (
	ErrNotFound  = errors.New("not found")
	ErrConflict  = errors.New("already exists")
	ErrClosed    = errors.New("store closed")
	ErrBadObject = errors.New("invalid object")
	// ErrDeploymentMismatch: a replica's deployment identity (CA, admin
	// token, ...) differs from the one recorded in the shared database.
	ErrDeploymentMismatch = errors.New("deployment identity differs from the shared database")
	ErrBadURL             = errors.New("invalid database URL")
)

// Object is one stored record. Name is unique within Kind.
type Object struct {
	Kind    string          `json:"kind"`
	ID      string          `json:"id"`
	Name    string          `json:"name"`
	Data    json.RawMessage `json:"data"`
	Updated time.Time       `json:"updated"`
}

// AuditEntry is one admin change: who, what, when, before and after.
type AuditEntry struct {
	ID       int64           `json:"id"`
	At       time.Time       `json:"at"`
	Actor    string          `json:"actor"`
	Action   string          `json:"action"` // create, update, delete, revoke, ...
	Kind     string          `json:"kind"`
	ObjectID string          `json:"object_id"`
	Name     string          `json:"name"`
	Before   json.RawMessage `json:"before,omitempty"`
	After    json.RawMessage `json:"after,omitempty"`
	// IP and Device say where the action came from (sign-ins, device
	// creation, admin API calls); empty when not known.
	IP     string `json:"ip,omitempty"`
	Device string `json:"device,omitempty"`
	// ActorVia says how an admin actor authenticated ("session adm_x",
	// "token atk_x", "oidc <issuer> <subject>", "bootstrap admin-token");
	// UserAgent is the request's User-Agent. Empty when not known.
	ActorVia  string `json:"actor_via,omitempty"`
	UserAgent string `json:"user_agent,omitempty"`
}

// Event is one stored flow event (its JSON body) with its arrival time.
type Event struct {
	ID   int64           `json:"id"`
	At   time.Time       `json:"at"`
	Data json.RawMessage `json:"data"`
}

// Tx is the view of one transaction.
type Tx interface {
	Get(kind, id string) (Object, error)
	GetByName(kind, name string) (Object, error)
	List(kind string) ([]Object, error)
	// Put creates or replaces the object with o.Kind/o.ID. A name taken by
	// another object of the same kind is ErrConflict.
	Put(o Object) error
	Delete(kind, id string) error
	Audit(e AuditEntry) error
}

// Store is what the controller needs from a backend.
type Store interface {
	// Update runs fn in a serialized read-write transaction. When fn changed
	// any object, the revision moves forward by one and is returned, and
	// watchers are told after the commit. An error from fn rolls back.
	Update(ctx context.Context, fn func(Tx) error) (rev int64, changed bool, err error)
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// LoadAll returns every object and the revision they are consistent with.
	LoadAll(ctx context.Context) (rev int64, objs []Object, err error)
	// Revision is the current revision.
	Revision(ctx context.Context) (int64, error)
	// Page lists objects of kind ordered by id, after the given id.
	Page(ctx context.Context, kind, after string, limit int) ([]Object, error)
	// AuditLog lists audit entries with id > after, oldest first.
	AuditLog(ctx context.Context, after int64, limit int) ([]AuditEntry, error)
	// AddEvents appends flow events, keeping at most the newest max.
	AddEvents(ctx context.Context, events []Event, max int) error
	// Events lists events with id > after, oldest first.
	Events(ctx context.Context, after int64, limit int) ([]Event, error)
	// Watch delivers revisions committed by any writer (this process or,
	// for a shared backend, another replica). cancel releases the watcher.
	Watch() (ch <-chan int64, cancel func())
	Close() error
}

// Presence is when a component (connector or relay) was last heard from, by
// any replica, with its runtime report (load, statistics) as JSON.
type Presence struct {
	Seen time.Time       `json:"seen"`
	Data json.RawMessage `json:"data,omitempty"`
}

// Shared is implemented by backends that several controller replicas use at
// once (PostgreSQL). It carries the little runtime state replicas must agree
// on without moving the revision: heartbeat presence, so that a connector
// heartbeating to replica B is not marked offline by replica A, and the
// deployment identity, so that a replica started with another CA or admin
// token refuses to serve.
type Shared interface {
	// Touch records that kind/id was heard from at at (newest wins).
	Touch(ctx context.Context, kind, id string, at time.Time, data json.RawMessage) error
	// Presence returns the last-heard records of kind, by id.
	Presence(ctx context.Context, kind string) (map[string]Presence, error)
	// ClaimDeployment records each key of identity not recorded yet and
	// returns an ErrDeploymentMismatch error naming every key whose recorded
	// value differs. Values must be digests, never secrets.
	ClaimDeployment(ctx context.Context, identity map[string]string) error
}
