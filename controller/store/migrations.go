package store

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// migrationFS holds the versioned schema of each dialect:
// migrations/<dialect>/NNNN_name.sql, applied in order at open; the number of
// the last applied file is the schema version. Never edit a released
// migration: add the next number, in both dialects.
//
//go:embed migrations
var migrationFS embed.FS

// loadMigrations returns the SQL of dialect's migrations in version order
// (index i is version i+1). Gaps or duplicate numbers are an error.
func loadMigrations(dialect string) ([]string, error) {
	dir := path.Join("migrations", dialect)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("read %s migrations: %w", dialect, err)
	}
	type mig struct {
		n   int
		sql string
	}
	var ms []mig
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, ok := strings.Cut(name, "_")
		n, err := strconv.Atoi(num)
		if !ok || err != nil || n < 1 {
			return nil, fmt.Errorf("%s migration %q: name must be NNNN_what.sql", dialect, name)
		}
		b, err := migrationFS.ReadFile(path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read %s migration %q: %w", dialect, name, err)
		}
		ms = append(ms, mig{n, string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].n < ms[j].n })
	out := make([]string, len(ms))
	for i, m := range ms {
		if m.n != i+1 {
			return nil, fmt.Errorf("%s migrations: expected version %d, found %d", dialect, i+1, m.n)
		}
		out[i] = m.sql
	}
	return out, nil
}
