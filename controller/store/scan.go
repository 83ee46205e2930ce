package store

import (
	"database/sql"
	"errors"
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
