// Package controller is Postern's control plane: the deployment CA, identities, policy model and store, admin API, declarative apply, enrollment, sign-in, Connection Tokens and policy push.
package controller
