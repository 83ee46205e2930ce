package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
)

// fileSink writes JSON lines to stdout or to a file it rotates by size:
// PATH.1 is the newest rotated file, PATH.N the oldest kept.
type fileSink struct {
	path    string
	max     int64
	backups int
	out     io.Writer // stdout
	f       *os.File
	size    int64
}

func openFileSink(sc *SinkConfig) (*fileSink, error) {
	s := &fileSink{path: sc.Path, max: int64(sc.MaxSizeMB) << 20, backups: sc.MaxBackups}
	if sc.Path == "-" {
		s.out = os.Stdout
		return s, nil
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *fileSink) open() error {
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open %s: %w", s.path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat %s: %w", s.path, err)
	}
	s.f, s.size = f, st.Size()
	return nil
}

func (s *fileSink) rotate() error {
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", s.path, err)
	}
	s.f = nil
	for i := s.backups - 1; i >= 1; i-- {
		from := fmt.Sprintf("%s.%d", s.path, i)
		if err := os.Rename(from, fmt.Sprintf("%s.%d", s.path, i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate %s: %w", from, err)
		}
	}
	if err := os.Rename(s.path, s.path+".1"); err != nil {
		return fmt.Errorf("rotate %s: %w", s.path, err)
	}
	return s.open()
}

func (s *fileSink) send(_ context.Context, recs []Record) error {
	if s.f == nil && s.out == nil {
		if err := s.open(); err != nil {
			return err
		}
	}
	for _, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("encode %s: %w", r.ID, err)
		}
		line = append(line, '\n')
		if s.out != nil {
			if _, err := s.out.Write(line); err != nil {
				return fmt.Errorf("write stdout: %w", err)
			}
			continue
		}
		if s.size > 0 && s.size+int64(len(line)) > s.max {
			if err := s.rotate(); err != nil {
				return err
			}
		}
		n, err := s.f.Write(line)
		s.size += int64(n)
		if err != nil {
			return fmt.Errorf("write %s: %w", s.path, err)
		}
	}
	if s.f != nil {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("sync %s: %w", s.path, err)
		}
	}
	return nil
}

func (s *fileSink) close() error {
	if s.f == nil {
		return nil
	}
	return s.f.Close()
}

// jsonLines encodes records one per line (webhook bodies use it too).
func jsonLines(recs []Record) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			return nil, fmt.Errorf("encode %s: %w", r.ID, err)
		}
	}
	return b.Bytes(), nil
}
