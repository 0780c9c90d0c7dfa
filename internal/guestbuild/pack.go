package guestbuild

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// MaxPackBytes caps the tar of a process function's directory: the API's
// largest artifact.
const MaxPackBytes = 256 << 20

// skipDirs are not shipped with a process function.
var skipDirs = map[string]bool{".git": true, ".hg": true, ".svn": true}

// Pack is the artifact of a process function: a tar of dir, the same bytes
// for the same files (entries in lexical order, no times, owners or
// permission bits beyond executable or not), so an unchanged directory
// makes an unchanged revision. Directories, regular files and symbolic
// links are packed (version-control directories are not); a symbolic link
// must point inside dir, and anything else (a socket, a device) is an
// error.
func Pack(dir string) ([]byte, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("%s is not a directory: a process function ships a directory (set module to it, or leave module out for the manifest's)", dir)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		h := &tar.Header{Name: name, Format: tar.FormatPAX}
		switch t := d.Type(); {
		case t.IsDir():
			if skipDirs[d.Name()] {
				return filepath.SkipDir
			}
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, name+"/", 0o755
		case t.IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			h.Typeflag, h.Size, h.Mode = tar.TypeReg, info.Size(), 0o644
			if info.Mode()&0o111 != 0 {
				h.Mode = 0o755
			}
		case t&fs.ModeSymlink != 0:
			dest, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if filepath.IsAbs(dest) || !filepath.IsLocal(filepath.Join(filepath.Dir(rel), dest)) {
				return fmt.Errorf("symbolic link %s -> %s points outside the function's directory", name, dest)
			}
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, filepath.ToSlash(dest), 0o777
		default:
			return fmt.Errorf("%s is not a file, directory or symbolic link", name)
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, io.LimitReader(f, h.Size))
			f.Close()
			if err != nil {
				return err
			}
		}
		if buf.Len() > MaxPackBytes {
			return errTooLarge
		}
		return nil
	})
	if errors.Is(err, errTooLarge) {
		return nil, fmt.Errorf("the directory packs to more than %d MiB: leave out what the function does not need at run time", MaxPackBytes>>20)
	}
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var errTooLarge = errors.New("too large")
