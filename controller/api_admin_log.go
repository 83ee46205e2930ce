package controller

import (
	"context"

	"postern.dev/postern/controller/api"
	"postern.dev/postern/controller/store"
)

// EventView is a stored flow event (GET /api/v1/events, package api).
type EventView = api.EventView

// AuditLog reads the audit log from the entry after after (api.Logs).
func (c *Controller) AuditLog(ctx context.Context, after int64, limit int) ([]store.AuditEntry, error) {
	return c.store.AuditLog(ctx, after, limit)
}

// FlowEvents reads the stored flow events from the entry after after
// (api.Logs).
func (c *Controller) FlowEvents(ctx context.Context, after int64, limit int) ([]store.Event, error) {
	return c.store.Events(ctx, after, limit)
}
