package controller

import (
	"context"
	"fmt"

	"postern.dev/postern/controller/export"
)

// startExport runs the event exporter configured by cfg.Export (sinks fed
// from this controller's store, cursors in DataDir/export/).
func (c *Controller) startExport(ctx context.Context) error {
	if c.cfg.Export == nil {
		return nil
	}
	ex, err := export.New(*c.cfg.Export, c.store, c.cfg.DataDir, c.log.With("component", "export"))
	if err != nil {
		return fmt.Errorf("event export: %w", err)
	}
	c.exporter = ex
	c.wg.Add(1)
	go func() { defer c.wg.Done(); ex.Run(ctx) }()
	names := make([]string, 0, len(c.cfg.Export.Sinks))
	for _, s := range c.cfg.Export.Sinks {
		names = append(names, s.Name+" ("+s.Type+")")
	}
	c.log.Info("exporting events", "sinks", names)
	return nil
}
