// A real OpenID Connect provider (the npm package oidc-provider) for Postern's
// single sign-on tests. It is configured from a JSON file named on the command
// line, listens on 127.0.0.1 on an ephemeral port and prints one JSON line
// {"issuer": "..."} on stdout when ready.
//
// Its login page is deliberately plain so that tests can script it over HTTP:
//   GET  /interaction/:uid          form with "login" and "password"
//   POST /interaction/:uid/login    login=...&password=...  (wrong password: 200 with "invalid login")
//   POST /interaction/:uid/abort    the user refuses: access_denied
// Test controls (loopback only, like the whole server):
//   POST /test/accounts/:login/disable   the account stops existing (refresh fails)
//   POST /test/accounts/:login/enable
//   POST /test/accounts/:login/groups    body: JSON array of group names
import http from 'node:http';
import fs from 'node:fs';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

// Start-up stages go to stderr with their time, so a harness that waited in
// vain can say where the provider stood.
const t0 = Date.now();
function stage(name) {
  process.stderr.write(`oidc-provider: ${name} after ${Date.now() - t0} ms\n`);
}
stage('config read');

// accounts: { login: { password, email, email_verified (boolean, string or null: not sent), name, groups: [], roles: [], disabled } }
const accounts = new Map(Object.entries(cfg.accounts || {}));

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function html(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

function loginPage(uid, clientId, msg) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>Sign in</title></head><body>
<h1>Sign in to ${html(clientId)}</h1>
<p id="msg">${html(msg || '')}</p>
<form id="login" method="post" action="/interaction/${html(uid)}/login">
<input type="text" name="login" autofocus>
<input type="password" name="password">
<button type="submit">Sign in</button>
</form>
<form id="abort" method="post" action="/interaction/${html(uid)}/abort"><button type="submit">Cancel</button></form>
</body></html>`;
}

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;
stage(`listening on ${issuer}`);

// The signing key comes from the harness (generated once per test process);
// generating a 2048-bit RSA key here for every provider cost CPU each start.
const signingKey = cfg.signing_key || crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: cfg.clients,
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups', 'roles'],
  },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false, // claims go into the ID token, as Okta/Entra do when configured
  features: {
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
  },
  pkce: { required: () => false },
  ttl: {
    AccessToken: cfg.access_token_ttl || 300,
    IdToken: cfg.id_token_ttl || 300,
    AuthorizationCode: 60,
    DeviceCode: 300,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 3600,
  },
  // Issue a refresh token whenever the client may use one (Okta-like), so the
  // relying party can re-check the user at every refresh.
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, id) {
    const a = accounts.get(id);
    if (!a || a.disabled) return undefined;
    return {
      accountId: id,
      async claims() {
        const claims = {
          sub: id,
          email: a.email,
          // Sent as given (a boolean, or a string as some providers send);
          // null sends no claim, as Microsoft Entra ID by default.
          email_verified: a.email_verified,
          name: a.name || id,
          groups: a.groups || [],
          roles: a.roles || [],
        };
        if (a.email_verified === null || a.email_verified === undefined) delete claims.email_verified;
        return claims;
      },
    };
  },
});

provider.use(async (ctx, next) => {
  const parts = ctx.path.split('/').filter(Boolean);
  if (parts[0] === 'test' && parts[1] === 'accounts' && ctx.method === 'POST' && parts.length === 4) {
    const a = accounts.get(parts[2]);
    if (!a) { ctx.status = 404; return; }
    if (parts[3] === 'disable') a.disabled = true;
    else if (parts[3] === 'enable') a.disabled = false;
    else if (parts[3] === 'groups') a.groups = JSON.parse(await readBody(ctx.req));
    else { ctx.status = 404; return; }
    ctx.status = 204;
    return;
  }
  if (parts[0] !== 'interaction') return next();
  const uid = parts[1];
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (details.uid !== uid) { ctx.status = 400; ctx.body = 'interaction mismatch'; return; }
  const clientId = details.params.client_id;
  if (ctx.method === 'GET' && parts.length === 2) {
    ctx.type = 'html';
    ctx.body = loginPage(uid, clientId);
    return;
  }
  if (ctx.method === 'POST' && parts[2] === 'abort') {
    const to = await provider.interactionResult(ctx.req, ctx.res, {
      error: 'access_denied', error_description: 'End-User refused the sign-in',
    }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }
  if (ctx.method === 'POST' && parts[2] === 'login') {
    const form = new URLSearchParams(await readBody(ctx.req));
    const login = form.get('login') || '';
    const a = accounts.get(login);
    if (!a || a.disabled || a.password !== form.get('password')) {
      ctx.type = 'html';
      ctx.body = loginPage(uid, clientId, 'invalid login or password');
      return;
    }
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: login, clientId });
    if (details.params.scope) grant.addOIDCScope(details.params.scope);
    const grantId = await grant.save();
    const to = await provider.interactionResult(ctx.req, ctx.res, {
      login: { accountId: login },
      consent: { grantId },
    }, { mergeWithLastSubmission: false });
    ctx.status = 303;
    ctx.redirect(to);
    return;
  }
  ctx.status = 404;
});

server.on('request', provider.callback());
stage('ready');
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
process.on('SIGTERM', () => process.exit(0));
process.stdin.on('end', () => process.exit(0)); // the test harness went away
process.stdin.resume();
