package store

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// scanObject reads one objects row (id, name, data, updated) from either
// backend; "no rows" from database/sql or pgx becomes ErrNotFound.
func scanObject(row interface{ Scan(...any) error }, kind string) (Object, error) {
	o := Object{Kind: kind}
	var data string
	var updated int64
	if err := row.Scan(&o.ID, &o.Name, &data, &updated); err != nil {
		if errors.Is(err, sql.ErrNoRows) || errors.Is(err, pgx.ErrNoRows) {
			return o, ErrNotFound
		}
		return o, err
	}
	o.Data = []byte(data)
	o.Updated = time.UnixMilli(updated).UTC()
	return o, nil
}

// scanObjects reads objects rows (id, name, data, updated) of one kind from
// either backend; no rows is an empty, non-nil slice.
func scanObjects(rs resultRows, kind string) ([]Object, error) {
	out := []Object{}
	for rs.Next() {
		o, err := scanObject(rs, kind)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rs.Err()
}

// insertEvents is the one INSERT that stores events on either backend;
// param writes the placeholder of the i-th argument (from 0). An event
// without a time is stamped now.
func insertEvents(events []Event, param func(i int) string) (string, []any) {
	var b strings.Builder
	args := make([]any, 0, 2*len(events))
	b.WriteString(`INSERT INTO events (at, data) VALUES `)
	for i, e := range events {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "(%s, %s)", param(2*i), param(2*i+1))
		at := e.At
		if at.IsZero() {
			at = time.Now()
		}
		args = append(args, at.UnixMilli(), string(e.Data))
	}
	return b.String(), args
}

// scanKindedObjects reads objects rows of any kind (kind, id, name, data,
// updated) from either backend; what names the step in errors.
func scanKindedObjects(rs resultRows, what string) ([]Object, error) {
	var out []Object
	for rs.Next() {
		var o Object
		var data string
		var updated int64
		if err := rs.Scan(&o.Kind, &o.ID, &o.Name, &data, &updated); err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		o.Data, o.Updated = []byte(data), time.UnixMilli(updated).UTC()
		out = append(out, o)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return out, nil
}

// resultRows is the part of a result set both backends offer (*sql.Rows and
// pgx.Rows).
type resultRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// scanAuditLog reads audit rows (id, at, actor, action, kind, object_id,
// name, before, after, ip, device) from either backend.
func scanAuditLog(rs resultRows) ([]AuditEntry, error) {
	out := []AuditEntry{}
	for rs.Next() {
		var e AuditEntry
		var at int64
		var before, after *string // NULL when the object did not exist
		if err := rs.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Kind, &e.ObjectID, &e.Name, &before, &after, &e.IP, &e.Device, &e.ActorVia, &e.UserAgent); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		e.At = time.UnixMilli(at).UTC()
		if before != nil {
			e.Before = []byte(*before)
		}
		if after != nil {
			e.After = []byte(*after)
		}
		out = append(out, e)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}

// scanEvents reads event rows (id, at, data) from either backend.
func scanEvents(rs resultRows) ([]Event, error) {
	out := []Event{}
	for rs.Next() {
		var e Event
		var at int64
		var data string
		if err := rs.Scan(&e.ID, &at, &data); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		e.At = time.UnixMilli(at).UTC()
		e.Data = []byte(data)
		out = append(out, e)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}
