// Package api is the HTTP layer of the controller's REST API: the routing of
// the endpoints it holds, request decoding, response and error writing, the
// per-IP rate limit and body limits every request passes, and the guards
// that authenticate admins (bearer tokens, console sessions) and components
// (mTLS).
//
// It holds no state of the control plane. The handlers talk to the core
// through Core (core.go), made of one interface per group of endpoints
// (Auth, Logs, Credentials, Admins in core.go; Status, Objects, Components,
// Clients, AccessRequests, Policies, SSO, WebAuthn beside their handlers),
// which *controller.Controller implements; the controller builds the Server
// with New, mounts its routes beside the console's, and wraps the whole mux
// in Middleware. This package imports nothing of the
// controller, so it never sees the model, the store's transactions or the
// signing keys.
//
// A new endpoint goes in the file of its audience (admin_*.go for the admin
// API, component.go, client.go, mfa.go, webauthn.go, sso.go, access.go,
// status.go, stream.go for push streams), its route in that
// file's *Routes method, its body types next to it, and what it needs of
// the core as a method on the interface of its group. The core reports
// failures as errors this package names (ObjectError, Forbidden, the Err*
// values); the handlers choose the status. (Login, Enroll, SignInGrant and
// the WebAuthn ceremonies return the status they decided inside a commit.)
package api
