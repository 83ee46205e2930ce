package store

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

func (s *Postgres) listenConn(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.cfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+NotifyChannel); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// listen feeds watchers from NOTIFY on conn, reconnecting (with backoff) when
// the connection breaks; after every (re)connection and every pollInterval
// it also reads the revision, so nothing missed while disconnected is lost.
func (s *Postgres) listen(ctx context.Context, conn *pgx.Conn) {
	defer close(s.done)
	backoff := 100 * time.Millisecond
	for {
		if conn == nil {
			var err error
			if conn, err = s.listenConn(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("store: LISTEN connection failed; retrying", "err", err, "in", backoff)
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 5*time.Second)
				continue
			}
			backoff = 100 * time.Millisecond
			s.poll(ctx)
		}
		wctx, cancel := context.WithTimeout(ctx, pollInterval)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if rev, perr := strconv.ParseInt(n.Payload, 10, 64); perr == nil {
				s.publishNewer(rev)
			} else {
				s.poll(ctx)
			}
		case ctx.Err() != nil:
			conn.Close(context.Background())
			return
		case errors.Is(err, context.DeadlineExceeded) && !conn.IsClosed():
			s.poll(ctx)
		default:
			s.log.Warn("store: LISTEN connection lost; reconnecting", "err", err)
			conn.Close(context.Background())
			conn = nil
		}
	}
}

func (s *Postgres) poll(ctx context.Context) {
	rev, err := s.Revision(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("store: read revision", "err", err)
		}
		return
	}
	s.publishNewer(rev)
}
