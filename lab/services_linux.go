package lab

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// waitListening waits until something listens on port (proto "tcp"/"udp") in node.
func (l *Lab) waitListening(ctx context.Context, node, proto, port string, timeout time.Duration, p *Proc) error {
	flag := "-Hltn"
	if proto == "udp" {
		flag = "-Hlun"
	}
	return WaitFor(ctx, timeout, fmt.Sprintf("%s port %s in %s", proto, port, node), func() error {
		if p != nil && !p.Running() {
			return fmt.Errorf("%s exited (%v); see %s", p.Name, p.ExitErr(), p.LogPath)
		}
		out, err := l.Exec(ctx, node, "ss", flag, "sport = :"+port)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) == "" {
			return fmt.Errorf("nothing listens yet")
		}
		return nil
	})
}

func (l *Lab) startServices(ctx context.Context) error {
	labBin := l.Bin("postern-lab")
	type svc struct {
		name, node, proto, port string
		args                    []string
	}
	svcs := []svc{
		{ProgPublicDNS, NodePublicDNS, "udp", "53", []string{labBin, "dns-server", "--listen", PublicDNSIP + ":53", "--zone", "example.com",
			"--record", PublicName + "=" + PublicWebIP, "--record", ControllerName + "=" + l.dualStack(ControllerIP, Controller6IP), "--record", RelayName + "=" + l.dualStack(RelayIP, Relay6IP)}},
		{ProgCorpDNS, NodeCorpDNS, "udp", "53", append([]string{labBin, "dns-server", "--listen", CorpDNSIP + ":53", "--zone", CorpZone, "--forward", PublicDNSIP + ":53",
			"--record", DBName + "=" + DBIP, "--record", WebName + "=" + WebIP, "--record", IntranetName + "=" + WebIP,
			"--record", SubnetAppName + "=" + SubnetHostIP, "--record", "dns." + CorpZone + "=" + CorpDNSIP}, corpDNS6Records()...)},
		{ProgPublicWeb, NodePublicDNS, "tcp", "80", []string{labBin, "http-server", "--listen", PublicWebIP + ":80", "--name", PublicName}},
		{ProgWeb, NodeWeb, "tcp", "80", []string{labBin, "http-server", "--listen", ":80", "--name", WebName}},
		{ProgSubnetWeb, NodeSubnetHost, "tcp", "80", []string{labBin, "http-server", "--listen", ":80", "--name", SubnetAppName + " (" + SubnetHostIP + ")"}},
	}
	procs := make([]*Proc, len(svcs))
	for i, s := range svcs {
		p, err := l.Spawn(s.name, s.node, nil, s.args...)
		if err != nil {
			return err
		}
		procs[i] = p
	}
	if err := l.startSSHD(ctx); err != nil {
		return err
	}
	pg, err := l.startPostgres(ctx)
	if err != nil {
		return err
	}
	for i, s := range svcs {
		if err := l.waitListening(ctx, s.node, s.proto, s.port, 15*time.Second, procs[i]); err != nil {
			return err
		}
	}
	if err := l.waitListening(ctx, NodeDB, "tcp", "22", 15*time.Second, nil); err != nil {
		return err
	}
	return l.setupPostgres(ctx, pg)
}

// sshClientConfig makes plain `ssh db.corp.internal` work in a namespace:
// ip netns exec bind-mounts /etc/netns/NS/ssh over /etc/ssh.
func (l *Lab) sshClientConfig(node string) error {
	dir := filepath.Join("/etc/netns", l.NS(node), "ssh")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("ssh config dir: %w", err)
	}
	cfg := fmt.Sprintf(`# postern-lab %s: logs into the lab's private hosts with a throwaway key
Host *
  User root
  IdentityFile %s
  IdentitiesOnly yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  ConnectTimeout 10
`, l.ID, l.SSHKey)
	if err := os.WriteFile(filepath.Join(dir, "ssh_config"), []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write ssh config: %w", err)
	}
	return nil
}

func (l *Lab) startSSHD(ctx context.Context) error {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/sshd"); serr != nil {
			return fmt.Errorf("lab needs OpenSSH's sshd (apt-get install openssh-server): %w", err)
		}
		sshd = "/usr/sbin/sshd"
	}
	dir := filepath.Join(l.Dir, "ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ssh dir: %w", err)
	}
	l.SSHKey = filepath.Join(dir, "id_ed25519")
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	for _, k := range []string{l.SSHKey, hostKey} {
		if _, err := run(ctx, nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "postern-lab-"+l.ID, "-f", k); err != nil {
			return fmt.Errorf("ssh-keygen: %w", err)
		}
	}
	pub, err := os.ReadFile(l.SSHKey + ".pub")
	if err != nil {
		return fmt.Errorf("read ssh key: %w", err)
	}
	auth := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(auth, pub, 0o600); err != nil {
		return fmt.Errorf("write authorized_keys: %w", err)
	}
	cfg := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`# postern-lab %s
Port 22
ListenAddress 0.0.0.0
ListenAddress ::
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PrintLastLog no
ClientAliveInterval 0
Subsystem sftp internal-sftp
`, l.ID, hostKey, filepath.Join(dir, "sshd.pid"), auth)), 0o644); err != nil {
		return fmt.Errorf("write sshd_config: %w", err)
	}
	// sshd's privilege separation directory (what the openssh-server package creates).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return fmt.Errorf("create /run/sshd: %w", err)
	}
	for _, n := range []string{NodeClient, NodeClientBob, NodeConnectorA, NodeConnectorB} {
		if err := l.sshClientConfig(n); err != nil {
			return err
		}
	}
	// Its own UTS namespace, so that `ssh db.corp.internal hostname` says "db".
	_, err = l.Spawn(ProgSSHD, NodeDB, nil, "unshare", "--uts", "--", "sh", "-c", "hostname db && exec "+sshd+" -D -e -f "+cfg)
	return err
}

func postgresBinDir() (string, error) {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "postgres")); err == nil {
			return d, nil
		}
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(matches) == 0 {
		return "", fmt.Errorf("lab needs PostgreSQL (apt-get install postgresql): no /usr/lib/postgresql/*/bin/postgres")
	}
	return filepath.Dir(matches[len(matches)-1]), nil
}

func (l *Lab) startPostgres(ctx context.Context) (*Proc, error) {
	return l.startPostgresOn(ctx, NodeDB, ProgPostgres, "pg")
}

// startPostgresOn initialises and starts a PostgreSQL server on node (data
// and socket under DIR/dir) accepting password logins from anywhere.
func (l *Lab) startPostgresOn(ctx context.Context, node, prog, dir string) (*Proc, error) {
	bin, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("lab needs the postgres user (apt-get install postgresql): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	base := filepath.Join(l.Dir, dir)
	data, sock := filepath.Join(base, "data"), filepath.Join(base, "run")
	for _, d := range []string{base, sock} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("postgres dir: %w", err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			return nil, fmt.Errorf("chown postgres dir: %w", err)
		}
	}
	asPG := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"}
	initdb := append(append([]string{}, asPG...), filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres", "--no-locale", "-E", "UTF8",
		"--auth-local=trust", "--auth-host=scram-sha-256")
	if out, err := l.Exec(ctx, node, initdb...); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	hba, err := os.OpenFile(filepath.Join(data, "pg_hba.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open pg_hba.conf: %w", err)
	}
	_, err = fmt.Fprintf(hba, "# postern-lab: password logins from the corporate network (and through connectors)\nhost all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n")
	hba.Close()
	if err != nil {
		return nil, fmt.Errorf("write pg_hba.conf: %w", err)
	}
	args := append(append([]string{}, asPG...), filepath.Join(bin, "postgres"), "-D", data, "-c", "listen_addresses=*", "-c", "port=5432",
		"-c", "unix_socket_directories="+sock, "-c", "log_connections=on")
	return l.Spawn(prog, node, nil, args...)
}

func (l *Lab) setupPostgres(ctx context.Context, pg *Proc) error {
	sock := filepath.Join(l.Dir, "pg", "run")
	psql := []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", "psql", "-h", sock, "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-q"}
	if err := WaitFor(ctx, 30*time.Second, "postgres to accept connections", func() error {
		if !pg.Running() {
			return fmt.Errorf("postgres exited (%v); see %s", pg.ExitErr(), pg.LogPath)
		}
		_, err := l.Exec(ctx, NodeDB, append(psql, "-d", "postgres", "-c", "select 1")...)
		return err
	}); err != nil {
		return err
	}
	setup := fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s';
CREATE DATABASE %s OWNER %s;
\c %s
SET ROLE %s;
CREATE TABLE servers (name text PRIMARY KEY, location text, note text);
INSERT INTO servers VALUES
  ('db',  'corp LAN %s',  'PostgreSQL and OpenSSH, reached through a Postern connector'),
  ('web', 'corp LAN %s',  'intranet web server'),
  ('app', 'corp subnet %s', 'published as a CIDR resource');
`, PGUser, l.PGPassword, PGDatabase, PGUser, PGDatabase, PGUser, DBIP, WebIP, SubnetHostIP)
	if out, err := l.ExecInput(ctx, NodeDB, strings.NewReader(setup), append(psql, "-d", "postgres")...); err != nil {
		return fmt.Errorf("set up database: %w\n%s", err, out)
	}
	return l.waitListening(ctx, NodeDB, "tcp", "5432", 10*time.Second, pg)
}
