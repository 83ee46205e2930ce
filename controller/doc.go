// Package controller is Postern's control plane: the deployment CA, identities, policy model and store, declarative apply, enrollment, sign-in, SSO, access governance, Connection Tokens and policy push.
//
// The HTTP layer of the REST API is package controller/api, which reaches
// the core through the interfaces it defines (api.Core); Controller
// implements them, builds the api.Server in Handler and mounts its routes
// beside the ones still served here (enrollment, the policy streams, SSO,
// WebAuthn and the console).
package controller
