package mounter

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
)

// A FUSE connection can be aborted by the kernel's fusectl filesystem: every
// FUSE superblock has a directory /sys/fs/fuse/connections/<N>, N its device
// minor (st_dev; major 0, an anonymous device), and a write to its "abort"
// file fails every request waiting on the connection, and every later one,
// at once (ENOTCONN or ECONNABORTED), whether or not the daemon is alive,
// stopped or stuck. Nothing here touches the mount itself: its connection
// is found in /proc/self/mountinfo, and a hung mount is never stat'ed.

// fusectlDir is where fusectl lives on a systemd host; the driver mounts it
// there when it is mounted nowhere (a container has its own /sys).
const fusectlDir = "/sys/fs/fuse/connections"

// errNoFusectl: fusectl is not mounted and cannot be.
var errNoFusectl = errors.New("no fusectl")

// fuseConn is the FUSE connection of one of this driver's mounts, as
// /proc/self/mountinfo showed it.
type fuseConn struct {
	MountPoint string
	Source     string // "bucket:sid"
	MountID    int    // the mount's id in mountinfo, to see it is still the same mount
	ID         uint32 // the connection: its device minor, its name under fusectl
}

// connAborter finds and aborts the FUSE connections of this driver's mounts.
type connAborter interface {
	// lookup finds the connection of the topmost mount at mountpoint. A
	// mount that is not a FUSE mount of this driver is ErrNotOurs; no mount
	// is ErrNotMounted.
	lookup(mountpoint string) (fuseConn, error)
	// waiting reports how many requests wait on the connection for an
	// answer from its daemon.
	waiting(c fuseConn) (int, error)
	// abort aborts the connection if mountpoint still shows it;
	// errNoFusectl if fusectl is not there to do it.
	abort(c fuseConn) error
}

// fusectl implements connAborter with /proc/self/mountinfo and fusectl.
type fusectl struct {
	mountinfo string                 // /proc/self/mountinfo
	dir       string                 // where to mount fusectl if it is nowhere
	mountCtl  func(dir string) error // mounts fusectl at dir

	mu sync.Mutex // serializes finding (and mounting) fusectl
}

func newFusectl() *fusectl {
	return &fusectl{mountinfo: "/proc/self/mountinfo", dir: fusectlDir, mountCtl: mountFusectl}
}

func mountFusectl(dir string) error {
	return unix.Mount("fusectl", dir, "fusectl", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
}

// mountEntry is one line of /proc/self/mountinfo (the fields used here).
type mountEntry struct {
	ID           int
	Major, Minor uint32
	MountPoint   string
	FsType       string
	Source       string
}

// parseMountInfo parses /proc/<pid>/mountinfo (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Paths and sources have space, tab, newline and backslash escaped as \ooo.
func parseMountInfo(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 10 || sep < 0 || len(f) < sep+3 {
			return nil, fmt.Errorf("mountinfo line %q: too few fields", line)
		}
		id, err := strconv.Atoi(f[0])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %q: mount id: %w", line, err)
		}
		maj, min, ok := strings.Cut(f[2], ":")
		if !ok {
			return nil, fmt.Errorf("mountinfo line %q: device %q is not major:minor", line, f[2])
		}
		major, err := strconv.ParseUint(maj, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %q: major: %w", line, err)
		}
		minor, err := strconv.ParseUint(min, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %q: minor: %w", line, err)
		}
		out = append(out, mountEntry{
			ID: id, Major: uint32(major), Minor: uint32(minor),
			MountPoint: unescapeMountInfo(f[4]),
			FsType:     unescapeMountInfo(f[sep+1]),
			Source:     unescapeMountInfo(f[sep+2]),
		})
	}
	return out, sc.Err()
}

// unescapeMountInfo undoes the kernel's \ooo (octal) escapes.
func unescapeMountInfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func (c *fusectl) entries() ([]mountEntry, error) {
	b, err := os.ReadFile(c.mountinfo)
	if err != nil {
		return nil, fmt.Errorf("read the mount table: %w", err)
	}
	return parseMountInfo(bytes.NewReader(b))
}

// connOf finds the connection of the topmost mount at mountpoint among
// entries, refusing any mount but a FUSE mount of this driver.
func connOf(entries []mountEntry, mountpoint string) (fuseConn, error) {
	mountpoint = filepath.Clean(mountpoint)
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.MountPoint != mountpoint {
			continue
		}
		sid, ours := sessionOf(mount.MountPoint{Device: e.Source, Type: e.FsType})
		if e.FsType != FUSEType || !ours || !sessionIDRE.MatchString(sid) || e.Major != 0 {
			return fuseConn{}, fmt.Errorf("%q is a %s mount of %q (device %d:%d), not a FUSE mount of this driver: %w",
				mountpoint, e.FsType, e.Source, e.Major, e.Minor, ErrNotOurs)
		}
		return fuseConn{MountPoint: mountpoint, Source: e.Source, MountID: e.ID, ID: e.Minor}, nil
	}
	return fuseConn{}, fmt.Errorf("%q: %w", mountpoint, ErrNotMounted)
}

func (c *fusectl) lookup(mountpoint string) (fuseConn, error) {
	entries, err := c.entries()
	if err != nil {
		return fuseConn{}, err
	}
	return connOf(entries, mountpoint)
}

// ctlDir returns where fusectl is mounted, mounting it at c.dir if it is
// mounted nowhere.
func (c *fusectl) ctlDir() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	find := func() (string, error) {
		entries, err := c.entries()
		if err != nil {
			return "", err
		}
		found := ""
		for _, e := range entries {
			if e.FsType == "fusectl" && (found == "" || e.MountPoint == c.dir) {
				found = e.MountPoint
			}
		}
		return found, nil
	}
	dir, err := find()
	if err != nil || dir != "" {
		return dir, err
	}
	if err := c.mountCtl(c.dir); err != nil {
		return "", fmt.Errorf("%w: fusectl, the kernel's FUSE control filesystem, is not mounted, and mounting it at %s failed: %w "+
			"(the driver needs CAP_SYS_ADMIN for that; or mount it on the node: mount -t fusectl none %s)", errNoFusectl, c.dir, err, fusectlDir)
	}
	klog.InfoS("mounted fusectl, to abort the FUSE connections of hung gcsfuse sessions", "path", c.dir)
	if dir, err = find(); err == nil && dir == "" {
		err = fmt.Errorf("%w: mounted fusectl at %s, but the mount table does not show it", errNoFusectl, c.dir)
	}
	return dir, err
}

// connFile is the path of one of the connection's control files.
func (c *fusectl) connFile(conn fuseConn, name string) (string, error) {
	dir, err := c.ctlDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, strconv.FormatUint(uint64(conn.ID), 10), name), nil
}

func (c *fusectl) waiting(conn fuseConn) (int, error) {
	p, err := c.connFile(conn, "waiting")
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("FUSE connection %d of %q: %w", conn.ID, conn.MountPoint, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("FUSE connection %d of %q: waiting %q: %w", conn.ID, conn.MountPoint, b, err)
	}
	return n, nil
}

// abort opens the connection's abort file first, then checks the mount
// table still shows the same mount of this driver with that connection at
// its mount point, then writes. An open control file stays bound to its
// connection (a write after the connection is gone fails), and two live
// connections never share a minor, so the check cannot be outrun: a
// connection number freed and reused in between is never aborted.
func (c *fusectl) abort(conn fuseConn) error {
	p, err := c.connFile(conn, "abort")
	if err != nil {
		return err
	}
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("FUSE connection %d of %q is not in %s: %w", conn.ID, conn.MountPoint, filepath.Dir(filepath.Dir(p)), err)
		}
		return fmt.Errorf("FUSE connection %d of %q: %w", conn.ID, conn.MountPoint, err)
	}
	defer f.Close()
	now, err := c.lookup(conn.MountPoint)
	if err != nil {
		return fmt.Errorf("not aborting FUSE connection %d: %w", conn.ID, err)
	}
	if now != conn {
		return fmt.Errorf("not aborting FUSE connection %d: %q now shows connection %d of %q (mount %d), not mount %d of %q",
			conn.ID, conn.MountPoint, now.ID, now.Source, now.MountID, conn.MountID, conn.Source)
	}
	if _, err := f.Write([]byte("1")); err != nil {
		return fmt.Errorf("abort FUSE connection %d of %q: %w", conn.ID, conn.MountPoint, err)
	}
	return nil
}
