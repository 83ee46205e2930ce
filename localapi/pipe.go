package localapi

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"strings"
)

// PipePrefix starts every Windows named pipe path.
const PipePrefix = `\\.\pipe\`

// PipeName is the Windows named pipe that stands for the socket path
// (DIR\posternd.sock): the daemon listens on it and clients dial it, so that
// --socket, POSTERN_SOCKET and the default state directory work alike on every
// OS. A path that already names a pipe is used as is; any other maps to
// \\.\pipe\posternd-<first 16 hex digits of SHA-256 of the cleaned,
// lower-cased path> (one pipe per state directory, so several daemons can
// run).
func PipeName(socketPath string) string {
	if strings.HasPrefix(socketPath, PipePrefix) {
		return socketPath
	}
	p := socketPath
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	sum := sha256.Sum256([]byte(strings.ToLower(filepath.Clean(p))))
	return PipePrefix + "posternd-" + hex.EncodeToString(sum[:8])
}
