// Package atomicfile replaces files so that a reader, a crash or a
// concurrent writer never sees half of one: Postern's keys, certificates and
// state files are written through it.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write replaces path with data through a uniquely named temporary file in
// the same directory (chmod to mode, fsync, rename), so a crash or a
// concurrent writer never leaves a half-written file. On failure the
// temporary file is removed and path is unchanged. It is for files Postern
// owns; never use it on a bind-mounted file such as a network namespace's
// /etc/resolv.conf (the rename would replace the mount point's target
// elsewhere, or fail).
func Write(path string, data []byte, mode os.FileMode) error {
	return WriteFunc(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFunc is Write for contents produced by write (an archive, an
// encoder): path is replaced only when write returns nil; otherwise the
// temporary file is removed and its error returned, naming path.
func WriteFunc(path string, mode os.FileMode, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	werr := write(f)
	if werr == nil {
		werr = f.Chmod(mode)
	}
	if werr == nil {
		werr = f.Sync()
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp, path)
	}
	if werr != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, werr)
	}
	return nil
}
