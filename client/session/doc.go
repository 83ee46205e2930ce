// Package session is the client device's session: what the daemon knows
// and keeps because it is signed in, apart from the traffic it carries.
//
// A Manager owns
//   - the device key and its self-signed certificate (devicekey.go; a key
//     the controller revoked is replaced at the next sign-in),
//   - the signed-in session and its controller client (login.go,
//     control.go), with the presets and the remembered controller that
//     complete a sign-in without a URL (preset.go) and the single sign-on
//     glue (sso.go),
//   - the policy stream (policy.go): it keeps the current snapshot, resumed
//     by revision after an outage and saved for fail static, and the signing
//     keys, issuer, relays and controller replicas that come with it,
//   - the end of the session when the controller refuses it (end.go),
//   - posture reports and calls forwarded for the access endpoints
//     (access.go),
//   - the tokens derived from the session (tokens.go): verified Connection
//     Tokens per connector, signaling tokens and TURN credentials.
//
// What it hands the flow layer (package client: pool, flows, front-ends,
// traversal) is deliberately narrow, and the flow layer declares the
// interfaces it uses (client.PolicySource, client.TokenSource) so that it
// can be driven by fakes:
//   - a policy view: Current returns the snapshot and a channel closed
//     when it is replaced (snapshots are never modified),
//   - a token source: ConnectionToken per connector and DeviceCert.
//
// The daemon (client.Daemon) is the composition of a Manager and the flow
// layer. It hears the session's events through an Observer (the controller
// came back or went away, the session ended) and does what they mean for the
// tunnel; it signs in by Authenticate (nothing changes yet), taking the
// tunnel down, Begin, and bringing it up again.
//
// Locking: the Manager never calls its Observer with its own lock held.
// Start, Stop, Begin, Logout and Close wait for the session's loops, which
// call the Observer, so a caller must not hold a lock the Observer takes.
// The state directory's files the session owns are DeviceKeyFile,
// SessionFile, PolicyFile and the remembered controller; the daemon keeps
// its own (prefs) in the same StateDir.
package session
