package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"postern.dev/postern/controller"
)

// Controller replicas (Options.ControllerReplicas): a PostgreSQL server on
// the controller node holds the shared store; replica A serves at
// ControllerIP (the deployment's public URL), replica B at ControllerBIP.

// controllerDBPassword is the password of the replicas' database role
// (PGPASSWORD in their environment, never on the command line).
func (l *Lab) controllerDBEnv() []string {
	return []string{"PGPASSWORD=" + l.controllerDBPassword}
}

// controllerDBURL is the replicas' --database.
func controllerDBURL() string {
	return "postgres://postern@" + ControllerIP + ":5432/postern?sslmode=disable"
}

// startControllerDB starts the replicas' PostgreSQL and creates their role
// and database.
func (l *Lab) startControllerDB(ctx context.Context) error {
	l.controllerDBPassword = randomSecret()
	pg, err := l.startPostgresOn(ctx, NodeController, ProgControllerDB, "pg-controller")
	if err != nil {
		return err
	}
	sock := filepath.Join(l.Dir, "pg-controller", "run")
	psql := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", "psql", "-h", sock, "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-d", "postgres"}
	if err := WaitFor(ctx, 30*time.Second, "the controllers' postgres to accept connections", func() error {
		if !pg.Running() {
			return fmt.Errorf("postgres exited (%v); see %s", pg.ExitErr(), pg.LogPath)
		}
		_, err := l.Exec(ctx, NodeController, append(psql, "-c", "select 1")...)
		return err
	}); err != nil {
		return err
	}
	setup := fmt.Sprintf("CREATE ROLE postern LOGIN PASSWORD '%s';\nCREATE DATABASE postern OWNER postern;\n", l.controllerDBPassword)
	if out, err := l.ExecInput(ctx, NodeController, strings.NewReader(setup), psql...); err != nil {
		return fmt.Errorf("set up the controllers' database: %w\n%s", err, out)
	}
	return l.waitListening(ctx, NodeController, "tcp", "5432", 10*time.Second, pg)
}

// replicaArgs are the extra serve flags of a replica advertised at ip.
func replicaArgs(ip string) []string {
	return []string{"--database", controllerDBURL(), "--advertise-url", "https://" + ip}
}

// startControllerB starts the second replica once the first created the
// deployment identity: it gets a copy of it, as docs/controller.md says.
func (l *Lab) startControllerB(ctx context.Context, dataA string) error {
	dataB := filepath.Join(l.Dir, "controller-b")
	if err := controller.CopyDeployment(dataA, dataB); err != nil {
		return err
	}
	args := append([]string{l.Bin("postern-controller"), "serve", "--data", dataB, "--listen", "0.0.0.0:" + ControllerPort,
		"--public-url", l.ControllerURL}, replicaArgs(ControllerBIP)...)
	if l.opts.TokenTTL > 0 {
		args = append(args, "--token-ttl", l.opts.TokenTTL.String())
	}
	p, err := l.Spawn(ProgControllerB, NodeControllerB, l.controllerDBEnv(), args...)
	if err != nil {
		return err
	}
	return l.waitListening(ctx, NodeControllerB, "tcp", ControllerPort, 30*time.Second, p)
}

// ControllerBURL is the second replica's own URL.
func ControllerBURL() string { return "https://" + ControllerBIP }

// ClientStateFile is the path of a file in the state directory of the
// posternd on node (e.g. controller.json).
func (l *Lab) ClientStateFile(node, name string) string {
	cs, err := l.client(node)
	if err != nil {
		return ""
	}
	return filepath.Join(cs.state, name)
}
