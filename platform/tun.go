package platform

import "golang.zx2c4.com/wireguard/tun"

// createTUN uses wireguard/tun, which is implemented for Linux (with
// GSO/GRO offloads when the kernel supports them), macOS (utun) and Windows
// (wintun).
func createTUN(o TUNOptions) (tun.Device, error) {
	mtu := o.MTU
	if mtu == 0 {
		mtu = 1500
	}
	return tun.CreateTUN(o.Name, mtu)
}
