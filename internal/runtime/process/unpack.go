package process

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Bounds of an unpacked function directory.
const (
	maxEntries       = 100_000
	maxUnpackedBytes = 2 << 30
)

// unpack extracts the tar in data into dir, which exists and is empty.
// Only directories, regular files and symbolic links that stay inside dir
// are accepted. Everything is left read-only (directories 0555, files 0444
// or 0555 when any execute bit was set) and owned by the node's uid, so a
// sandboxed process can read and run its code but not change it.
func unpack(data []byte, dir string) error {
	if len(data) == 0 {
		return errors.New("the artifact is empty: a process function's artifact is a tar of its directory")
	}
	tr := tar.NewReader(bytes.NewReader(data))
	var dirs []string
	var total int64
	for n := 0; ; n++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("not a tar of the function's directory: %w", err)
		}
		if n >= maxEntries {
			return fmt.Errorf("more than %d entries", maxEntries)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		if name == "." {
			continue
		}
		if !filepath.IsLocal(filepath.FromSlash(name)) {
			return fmt.Errorf("entry %q is outside the function's directory", h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.Mkdir(target, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return err
			}
			dirs = append(dirs, target)
		case tar.TypeReg:
			total += h.Size
			if total > maxUnpackedBytes {
				return fmt.Errorf("unpacks to more than %d bytes", int64(maxUnpackedBytes))
			}
			mode := os.FileMode(0o444)
			if h.Mode&0o111 != 0 {
				mode = 0o555
			}
			f, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Chmod(target, mode)
			}
			if err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		case tar.TypeSymlink:
			dest := filepath.FromSlash(h.Linkname)
			if filepath.IsAbs(dest) || !filepath.IsLocal(filepath.Join(filepath.Dir(filepath.FromSlash(name)), dest)) {
				return fmt.Errorf("symbolic link %q -> %q points outside the function's directory", h.Name, h.Linkname)
			}
			if err := os.Symlink(dest, target); err != nil {
				return fmt.Errorf("entry %q: %w", h.Name, err)
			}
		default:
			return fmt.Errorf("entry %q: only directories, regular files and symbolic links are allowed", h.Name)
		}
	}
	dirs = append(dirs, dir)
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dirs[i], 0o555); err != nil {
			return err
		}
	}
	return nil
}
