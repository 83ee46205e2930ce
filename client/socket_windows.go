package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/Microsoft/go-winio"
	"golang.org/x/sys/windows"

	"postern.dev/postern/localapi"
)

// servicePipeSDDL is the named pipe's security descriptor when posternd runs
// as LocalSystem (the service): full access for LocalSystem and
// Administrators, read/write for interactive users so that the desktop
// user's CLI and tray can open it; checkPeer then turns away every
// interactive user but the one signed in at the console. Network logons,
// services and anonymous callers cannot open it. Protected (P): nothing is
// inherited.
const servicePipeSDDL = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GRGW;;;IU)"

// pipeSDDL is servicePipeSDDL for the service; when posternd runs as a user
// (e.g. --socks5 without the service), the pipe admits LocalSystem,
// Administrators and that user only.
func pipeSDDL() (string, error) {
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return "", fmt.Errorf("daemon's account: %w", err)
	}
	if u.User.Sid.IsWellKnown(windows.WinLocalSystemSid) {
		return servicePipeSDDL, nil
	}
	return "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;" + u.User.Sid.String() + ")", nil
}

// listenSocket serves the local API on the named pipe that stands for path
// (localapi.PipeName): Windows has no Unix-socket peer credentials, so the
// pipe's ACL is what admits callers. A group (--socket-group) is not
// supported here.
func listenSocket(path string, gid int) (net.Listener, error) {
	if gid >= 0 {
		return nil, errors.New("--socket-group is not supported on Windows: the local API pipe admits Administrators and interactive users")
	}
	name := localapi.PipeName(path)
	sddl, err := pipeSDDL()
	if err != nil {
		return nil, err
	}
	ln, err := winio.ListenPipe(name, &winio.PipeConfig{SecurityDescriptor: sddl, InputBufferSize: 64 << 10, OutputBufferSize: 64 << 10})
	if err != nil {
		if errors.Is(err, windows.ERROR_ACCESS_DENIED) || errors.Is(err, windows.ERROR_PIPE_BUSY) {
			return nil, fmt.Errorf("another posternd is already serving %s (pipe %s)", path, name)
		}
		return nil, fmt.Errorf("listen on pipe %s (for %s): %w", name, path, err)
	}
	return ln, nil
}

// checkPeer admits a pipe client whose process runs as LocalSystem, as an
// elevated Administrator, or as the session's user: the daemon's own account
// when it is not LocalSystem, else the user signed in at the active console
// session. Other interactive users (fast user switching, a second RDP
// session) are refused.
func checkPeer(c net.Conn) error {
	f, ok := c.(interface{ Fd() uintptr })
	if !ok {
		return errors.New("local API: not a named pipe connection")
	}
	var pid uint32
	if err := windows.GetNamedPipeClientProcessId(windows.Handle(f.Fd()), &pid); err != nil {
		return fmt.Errorf("local API: pipe client process: %w", err)
	}
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, pid)
	if err != nil {
		return fmt.Errorf("local API: open client process %d: %w", pid, err)
	}
	defer windows.CloseHandle(h)
	var tok windows.Token
	if err := windows.OpenProcessToken(h, windows.TOKEN_QUERY, &tok); err != nil {
		return fmt.Errorf("local API: token of client process %d: %w", pid, err)
	}
	defer tok.Close()
	u, err := tok.GetTokenUser()
	if err != nil {
		return fmt.Errorf("local API: user of client process %d: %w", pid, err)
	}
	sid := u.User.Sid
	if sid.IsWellKnown(windows.WinLocalSystemSid) || isElevatedAdmin(tok) {
		return nil
	}
	owner, err := sessionUser()
	if err != nil {
		return fmt.Errorf("local API: %w", err)
	}
	if sid.Equals(owner) {
		return nil
	}
	return fmt.Errorf("local API: %s is neither the session's user nor an administrator", accountName(sid))
}

// isElevatedAdmin reports whether tok has the Administrators group enabled
// (an elevated token; UAC's filtered token has it deny-only).
func isElevatedAdmin(tok windows.Token) bool {
	groups, err := tok.GetTokenGroups()
	if err != nil {
		return false
	}
	for _, g := range groups.AllGroups() {
		if g.Attributes&windows.SE_GROUP_ENABLED != 0 && g.Sid.IsWellKnown(windows.WinBuiltinAdministratorsSid) {
			return true
		}
	}
	return false
}

// sessionUser is the account the daemon serves: its own when it does not
// run as LocalSystem, else the user of the active console session.
func sessionUser() (*windows.SID, error) {
	self, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return nil, fmt.Errorf("daemon's account: %w", err)
	}
	if !self.User.Sid.IsWellKnown(windows.WinLocalSystemSid) {
		return self.User.Sid, nil
	}
	sess := windows.WTSGetActiveConsoleSessionId()
	if sess == 0xFFFFFFFF {
		return nil, errors.New("no console session")
	}
	var ut windows.Token
	if err := windows.WTSQueryUserToken(sess, &ut); err != nil {
		return nil, fmt.Errorf("user of console session %d: %w", sess, err)
	}
	defer ut.Close()
	u, err := ut.GetTokenUser()
	if err != nil {
		return nil, fmt.Errorf("user of console session %d: %w", sess, err)
	}
	return u.User.Sid.Copy()
}

func accountName(sid *windows.SID) string {
	if acc, dom, _, err := sid.LookupAccount(""); err == nil {
		return dom + `\` + acc
	}
	return sid.String()
}

// dialSocket connects to the local API pipe that stands for path.
func dialSocket(path string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return winio.DialPipeContext(ctx, localapi.PipeName(path))
}
