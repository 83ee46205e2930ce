// Package platform holds one small interface per OS subsystem the client daemon touches (TUN device, routes, DNS configuration), with Linux, macOS and Windows implementations.
package platform
