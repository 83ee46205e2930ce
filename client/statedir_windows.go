package client

import (
	"fmt"

	"golang.org/x/sys/windows"
)

// stateDirSDDL protects the state directory (device key, session): full
// access for LocalSystem, Administrators and the directory's owner, inherited
// by everything in it, nothing inherited from %ProgramData% (whose default
// ACL lets every user read).
const stateDirSDDL = "D:P(A;OICI;GA;;;SY)(A;OICI;GA;;;BA)(A;OICI;GA;;;OW)"

// secureStateDir replaces the state directory's DACL with stateDirSDDL.
func secureStateDir(dir string) error {
	sd, err := windows.SecurityDescriptorFromString(stateDirSDDL)
	if err != nil {
		return fmt.Errorf("state directory ACL: %w", err)
	}
	dacl, _, err := sd.DACL()
	if err != nil {
		return fmt.Errorf("state directory ACL: %w", err)
	}
	if err := windows.SetNamedSecurityInfo(dir, windows.SE_FILE_OBJECT,
		windows.DACL_SECURITY_INFORMATION|windows.PROTECTED_DACL_SECURITY_INFORMATION, nil, nil, dacl, nil); err != nil {
		return fmt.Errorf("set the ACL of %s: %w", dir, err)
	}
	return nil
}
