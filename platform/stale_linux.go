package platform

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func removeStaleRoutes(tunName string) (int, error) {
	if tunName == "" {
		return 0, fmt.Errorf("%w: no device name", ErrRoute)
	}
	link, err := netlink.LinkByName(tunName)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return 0, nil
		}
		return 0, fmt.Errorf("%w: interface %s: %w", ErrRoute, tunName, err)
	}
	filter := &netlink.Route{LinkIndex: link.Attrs().Index, Table: unix.RT_TABLE_MAIN, Protocol: routeProtocol}
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_OIF|netlink.RT_FILTER_TABLE|netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return 0, fmt.Errorf("%w: list routes of %s: %w", ErrRoute, tunName, err)
	}
	n := 0
	var errs []error
	for i := range routes {
		if err := netlink.RouteDel(&routes[i]); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route %s: %w", routes[i].Dst, err))
			continue
		}
		n++
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("%w: %s: %w", ErrRoute, tunName, errors.Join(errs...))
	}
	return n, nil
}
