package controller

import (
	"context"

	"postern.dev/postern/controller/api"
)

// Admin-management API paths (served by package api).
const (
	PathAdmins        = api.PathAdmins
	PathAdminTokens   = api.PathAdminTokens
	PathAdminSessions = api.PathAdminSessions
	PathAdminMe       = api.PathAdminMe
)

// Bodies of the admin-management API, defined with its handlers in package
// api.
type (
	AdminRequest      = api.AdminRequest
	AdminTokenRequest = api.AdminTokenRequest
	MeView            = api.MeView
	AdminView         = api.AdminView
	AdminTokenView    = api.AdminTokenView
	AdminSessionView  = api.AdminSessionView
)

// WhoAmI describes the admin calling the admin API (GET /api/v1/me).
func (c *Controller) WhoAmI(ctx context.Context) MeView {
	p := adminFrom(ctx)
	return MeView{Name: p.Name, Role: p.Role, Via: p.Via}
}
