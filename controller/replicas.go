package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"postern.dev/postern/controlapi"
	"postern.dev/postern/controller/store"
	"postern.dev/postern/internal/atomicfile"
)

// openStore opens the configured backend: SQLite in the data directory, or
// the PostgreSQL database of Config.DatabaseURL shared by several replicas.
// A replica whose deployment identity (CA, admin token, TURN secret, OIDC
// flow key) differs from the one recorded in the shared database refuses to
// start: it would issue certificates and tokens the others do not trust.
// Token-signing keys are shared through the database itself (sharedkeys.go).
func (c *Controller) openStore() (store.Store, error) {
	if c.cfg.DatabaseURL == "" {
		return store.OpenSQLite(filepath.Join(c.cfg.DataDir, "postern.db"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.OpenPostgres(ctx, c.cfg.DatabaseURL, c.log)
	if err != nil {
		if errors.Is(err, store.ErrBadURL) {
			return nil, fmt.Errorf("%w: DatabaseURL: %w", ErrConfig, err)
		}
		return nil, err
	}
	if err := st.ClaimDeployment(ctx, c.deploymentIdentity()); err != nil {
		st.Close()
		if errors.Is(err, store.ErrDeploymentMismatch) {
			return nil, fmt.Errorf("%w (every replica's data directory needs the same ca.pem, ca-key.pem, admin-token, turn-secret and, with single sign-on, oidc-flow-key: copy them from the first replica; see docs/controller.md)", err)
		}
		return nil, err
	}
	if err := c.shareSigningKeys(ctx, st); err != nil {
		st.Close()
		return nil, err
	}
	c.log.Info("store: PostgreSQL", "database", store.RedactURL(c.cfg.DatabaseURL))
	return st, nil
}

// deploymentIdentity is what every replica must share, as digests (the
// database never holds the secrets themselves).
func (c *Controller) deploymentIdentity() map[string]string {
	id := map[string]string{
		"ca_sha256":          c.CAFingerprint(),
		"admin_token_sha256": sha256Hex(c.adminTok),
		"turn_secret_sha256": sha256Hex(string(c.turnKey)),
	}
	if c.sso != nil && len(c.sso.auth.FlowKey) > 0 {
		id["oidc_flow_key_sha256"] = sha256Hex(string(c.sso.auth.FlowKey))
	}
	return id
}

// touchPresence records, for the other replicas, that a connector or relay
// was heard from now, with its runtime report. A failure only loses
// freshness: the heartbeat itself has been handled.
func (c *Controller) touchPresence(ctx context.Context, kind, id string, report any) {
	sh, ok := c.store.(store.Shared)
	if !ok {
		return
	}
	b, err := json.Marshal(report)
	if err != nil {
		b = nil
	}
	if err := sh.Touch(ctx, kind, id, time.Now(), b); err != nil && ctx.Err() == nil {
		c.log.Warn("record heartbeat for other replicas", "kind", kind, "id", id, "err", err)
	}
}

// syncPresence merges what other replicas heard (last seen, load, relay
// statistics) into this replica's runtime state, so that a connector
// heartbeating to another replica is neither marked offline here nor shown
// without its last heartbeat and load.
func (c *Controller) syncPresence(ctx context.Context) {
	sh, ok := c.store.(store.Shared)
	if !ok {
		return
	}
	conns, err := sh.Presence(ctx, KindConnector)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("read heartbeats of other replicas", "err", err)
		}
		return
	}
	reps, err := sh.Presence(ctx, kindReplica)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("read the other replicas' presence", "err", err)
		}
		return
	}
	relays, err := sh.Presence(ctx, KindRelay)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("read heartbeats of other replicas", "err", err)
		}
		return
	}
	c.rtMu.Lock()
	defer c.rtMu.Unlock()
	for u, p := range reps {
		if p.Seen.After(c.replicaSeen[u]) {
			c.replicaSeen[u] = p.Seen
		}
	}
	if urls := c.controllerURLsLocked(); !slices.Equal(urls, c.announced) {
		// A replica joined or went silent: push streams send their
		// snapshot again, so parts learn the new list now rather than at
		// the next policy change.
		c.announced = urls
		defer c.hub.notify()
	}
	for id, p := range conns {
		if !p.Seen.After(c.connSeen[id]) {
			continue
		}
		c.connSeen[id] = p.Seen
		var load controlapi.ConnectorLoad
		if len(p.Data) > 0 && json.Unmarshal(p.Data, &load) == nil {
			c.connLoad[id] = load
		}
	}
	for id, p := range relays {
		if !p.Seen.After(c.relaySeen[id]) {
			continue
		}
		c.relaySeen[id] = p.Seen
		var stats map[string]float64
		if len(p.Data) > 0 && json.Unmarshal(p.Data, &stats) == nil {
			c.relayStats[id] = stats
		}
	}
}

// kindReplica is the presence kind of controller replicas (id: their
// advertised URL).
const kindReplica = "replica"

// touchReplica records, every heartbeat interval, that this replica serves
// at its advertised URL.
func (c *Controller) touchReplica(ctx context.Context) {
	sh, ok := c.store.(store.Shared)
	if !ok || c.advertise == "" {
		return
	}
	now := time.Now()
	if now.Sub(c.replicaTouched) < time.Duration(c.intervalSeconds())*time.Second {
		return
	}
	c.replicaTouched = now
	if err := sh.Touch(ctx, kindReplica, c.advertise, now, nil); err != nil && ctx.Err() == nil {
		c.log.Warn("record this replica for the others", "url", c.advertise, "err", err)
	}
}

// controllerURLs lists the URLs parts may reach this deployment at: the
// public URL, then every replica heard of within three heartbeat intervals
// (this one included), sorted. Nil when the public URL is the only one.
func (c *Controller) controllerURLs() []string {
	c.rtMu.Lock()
	defer c.rtMu.Unlock()
	return c.controllerURLsLocked()
}

func (c *Controller) controllerURLsLocked() []string {
	limit := 3 * time.Duration(c.intervalSeconds()) * time.Second
	var reps []string
	if c.advertise != "" {
		reps = append(reps, c.advertise)
	}
	now := time.Now()
	for u, seen := range c.replicaSeen {
		if u != c.advertise && now.Sub(seen) < limit {
			reps = append(reps, u)
		}
	}
	if len(reps) == 0 || len(reps) == 1 && reps[0] == c.issuer {
		return nil
	}
	sort.Strings(reps)
	out := []string{c.issuer}
	for _, u := range reps {
		if u != c.issuer {
			out = append(out, u)
		}
	}
	return out
}

// reload brings the model up to the store's revision (another replica's
// commits, or a local commit that raced one): with a change log
// (store.Follower) by applying only what changed since the model's
// revision, as a local commit does, and by a full reload (loadAll) when a
// change needs one (policy objects, memberships, shared keys) or the log no
// longer reaches back. Reloading every object for each sign-in on another
// replica made each replica's CPU grow with the whole deployment's sign-in
// rate times its size.
func (c *Controller) reload(ctx context.Context) error {
	full := func() error { return c.loadAll(ctx) }
	if c.follower == nil {
		return full()
	}
	c.reloadMu.Lock()
	m := c.cur.Load()
	if m == nil {
		c.reloadMu.Unlock()
		return full()
	}
	rev, changes, err := c.follower.ChangesSince(ctx, m.Rev)
	if err != nil {
		c.reloadMu.Unlock()
		if errors.Is(err, store.ErrChangesGone) {
			return full()
		}
		return fmt.Errorf("follow commits: %w", err)
	}
	if rev <= m.Rev {
		c.reloadMu.Unlock()
		return nil
	}
	nm, ok := m.with(rev, changes)
	if !ok {
		c.reloadMu.Unlock()
		return full()
	}
	c.cur.Store(nm)
	c.reloadMu.Unlock()
	c.met.follows.WithLabelValues("incremental").Inc()
	c.wakeFor(m, changes)
	return nil
}

// DeploymentFiles are the files of a data directory that make up the
// deployment identity every replica shares (docs/controller.md): the CA and
// its key, the admin token, the TURN secret, the token-signing keys and, with
// single sign-on, the OIDC flow key. The database itself is shared through
// DatabaseURL, not copied.
var DeploymentFiles = []string{"ca.pem", "ca-key.pem", "admin-token", "turn-secret", "token-keys.json", oidcFlowKeyFile}

// optionalDeploymentFiles may be missing from a replica's data directory:
// the OIDC flow key exists only where single sign-on is configured.
var optionalDeploymentFiles = map[string]bool{oidcFlowKeyFile: true}

// CopyDeployment copies the deployment identity (DeploymentFiles) of the
// data directory from into to, creating to (0700); files are written 0600.
// It is how a new replica is seeded from the first one on the same host
// (tests, the lab); across hosts an operator copies the same files.
func CopyDeployment(from, to string) error {
	if err := os.MkdirAll(to, 0o700); err != nil {
		return fmt.Errorf("copy the deployment identity: %w", err)
	}
	for _, f := range DeploymentFiles {
		b, err := os.ReadFile(filepath.Join(from, f))
		if errors.Is(err, fs.ErrNotExist) && optionalDeploymentFiles[f] {
			continue
		}
		if err != nil {
			return fmt.Errorf("copy the deployment identity: %w", err)
		}
		if err := atomicfile.Write(filepath.Join(to, f), b, 0o600); err != nil {
			return fmt.Errorf("copy the deployment identity: %w", err)
		}
	}
	return nil
}
