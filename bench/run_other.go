//go:build !linux

package bench

import "context"

// Run needs Linux (network namespaces, nftables, tc).
func Run(ctx context.Context, opts Options) (*Report, error) { return nil, ErrUnsupported }
