// Package pgtest starts a real, throw-away PostgreSQL server for tests of the
// controller's PostgreSQL backend: initdb into a temporary directory (as the
// postgres user, since initdb refuses root), a server on a free 127.0.0.1
// port with its socket in that directory, password authentication, and
// one fresh database per caller. The server is stopped and its directory
// removed when the test that started it ends.
//
// Without root or without PostgreSQL binaries the calling test is skipped,
// unless CI=true, where it fails.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"postern.dev/postern/internal/testenv"
)

// BinDirEnv names an environment variable that may point at the directory
// holding initdb, pg_ctl and postgres.
const BinDirEnv = "POSTERN_PG_BIN"

// Server is a running test PostgreSQL server.
type Server struct {
	dir, bin string
	port     int
	password string
	n        atomic.Int64
}

// findBin returns the directory of the newest PostgreSQL server binaries.
func findBin() (string, error) {
	if d := os.Getenv(BinDirEnv); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return vi > vj
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb) found; apt-get install postgresql")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Start starts a server that is stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	testenv.RequireRoot(t, "PostgreSQL tests run the server as the postgres user")
	bin, err := findBin()
	testenv.Require(t, err == nil, "%v", err)
	pg, err := user.Lookup("postgres")
	testenv.Require(t, err == nil, "no postgres user: %v", err)
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	dir, err := os.MkdirTemp("", "postern-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatalf("chown %s: %v", dir, err)
	}
	pw := make([]byte, 16)
	rand.Read(pw)
	s := &Server{dir: dir, bin: bin, password: hex.EncodeToString(pw)}
	pwFile := filepath.Join(dir, "pwfile")
	if err := os.WriteFile(pwFile, []byte(s.password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(pwFile, uid, gid); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) error {
		cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(bin, name)}, args...)...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
		}
		return nil
	}
	data := filepath.Join(dir, "data")
	if err := run("initdb", "-D", data, "-U", "postern", "--pwfile", pwFile, "--auth", "scram-sha-256",
		"-E", "UTF8", "--locale", "C.UTF-8", "--no-sync"); err != nil {
		t.Fatal(err)
	}
	// A free port can be taken between probing and binding: retry.
	var startErr error
	for attempt := 0; attempt < 5; attempt++ {
		if s.port, err = freePort(); err != nil {
			t.Fatal(err)
		}
		opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=100", s.port, dir)
		startErr = run("pg_ctl", "-D", data, "-l", filepath.Join(dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
		if startErr == nil {
			break
		}
	}
	if startErr != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		t.Fatalf("start PostgreSQL: %v\n%s", startErr, log)
	}
	t.Cleanup(func() {
		// pg_ctl stops exactly the server of this data directory (its
		// postmaster.pid), nothing else.
		if err := run("pg_ctl", "-D", data, "-m", "immediate", "-w", "-t", "30", "stop"); err != nil {
			t.Logf("stop PostgreSQL: %v", err)
		}
	})
	return s
}

// URL is the connection URL of database db.
func (s *Server) URL(db string) string {
	return fmt.Sprintf("postgres://postern:%s@127.0.0.1:%d/%s?sslmode=disable", s.password, s.port, db)
}

// NewDatabase creates an empty database and returns its URL.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d", s.n.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatalf("connect to test PostgreSQL: %v", err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	return s.URL(name)
}
