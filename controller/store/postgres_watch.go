package store

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Watch implements Store: revisions committed here or by any other replica.
func (s *Postgres) Watch() (<-chan int64, func()) {
	ch := make(chan int64, 1)
	s.wmu.Lock()
	if s.closed {
		close(ch)
		s.wmu.Unlock()
		return ch, func() {}
	}
	s.watchers[ch] = struct{}{}
	s.wmu.Unlock()
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.wmu.Lock()
			if _, ok := s.watchers[ch]; ok {
				delete(s.watchers, ch)
				close(ch)
			}
			s.wmu.Unlock()
		})
	}
}

// notify delivers rev to every watcher when it is newer than any delivered.
func (s *Postgres) notify(rev int64) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed || rev <= s.maxRev {
		return
	}
	s.maxRev = rev
	for ch := range s.watchers {
		select {
		case ch <- rev:
		default:
			select {
			case <-ch:
			default:
			}
			select {
			case ch <- rev:
			default:
			}
		}
	}
}

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
				s.notify(rev)
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
	s.notify(rev)
}
