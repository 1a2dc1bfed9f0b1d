package container

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/tcptrail/tcptrail/internal/mountinfo"
)

// ErrNoCgroup2 is returned when no cgroup2 filesystem is mounted: a cgroup
// v1-only host, where bpf_get_current_cgroup_id() reports the same id (the
// v2 root's) for every task and so cannot tell containers apart.
var ErrNoCgroup2 = errors.New("no cgroup2 filesystem mounted (cgroup v1-only host): BPF cgroup ids need cgroup v2")

// CgroupID returns the id BPF's bpf_get_current_cgroup_id() reports for a
// task in the cgroup v2 cgroup at path (a path as /proc/PID/cgroup's "0::"
// line gives it, e.g. "/system.slice/docker-<id>.scope"). It lets the
// userspace side turn the cgroup id a BPF program recorded into a path and
// so a container, without reading /proc for a process that may be gone.
//
// The helper returns the cgroup's kernfs node id, and kernfs hands out that
// same id as the inode number of the cgroup's directory on 64-bit kernels
// (the only ones tcptrail builds for), so the id is the inode of the
// directory under the cgroup2 mount. The mount is looked up in
// /proc/self/mountinfo each call: it is /sys/fs/cgroup on a v2 host and
// often /sys/fs/cgroup/unified on a hybrid one.
//
// A path that does not exist (the cgroup was removed, or path came from a
// v1 hierarchy) gives an error that matches fs.ErrNotExist; a host without
// cgroup2 gives ErrNoCgroup2.
func CgroupID(path string) (uint64, error) {
	if !strings.HasPrefix(path, "/") {
		return 0, fmt.Errorf("cgroup path %q: not absolute", path)
	}
	for _, c := range strings.Split(path, "/") {
		if c == ".." {
			// /proc/PID/cgroup shows a process outside the reader's cgroup
			// namespace as "/../…": no directory of this mount is its.
			return 0, fmt.Errorf("cgroup path %q: outside this cgroup namespace", path)
		}
	}
	dir, err := cgroup2Dir(path)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if !fi.IsDir() {
		return 0, fmt.Errorf("cgroup %s: %s is not a directory", path, dir)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("cgroup %s: no inode number from stat", path)
	}
	return st.Ino, nil
}

// Cgroup2Mount returns where the cgroup2 filesystem is mounted, or
// ErrNoCgroup2.
func Cgroup2Mount() (string, error) {
	m, err := readCgroup2Mount()
	if err != nil {
		return "", err
	}
	return m.point, nil
}

// cgroup2Dir returns the directory of the v2 cgroup at path.
func cgroup2Dir(path string) (string, error) {
	m, err := readCgroup2Mount()
	if err != nil {
		return "", err
	}
	rel := path
	if m.root != "/" {
		r, ok := strings.CutPrefix(path, m.root)
		if !ok || (r != "" && r[0] != '/') { // root "/a" is not a prefix of "/ab"
			return "", fmt.Errorf("cgroup %s: outside the cgroup2 mount at %s (its root is %s)", path, m.point, m.root)
		}
		rel = r
	}
	return filepath.Join(m.point, rel), nil
}

type mount struct {
	root  string // the directory of the filesystem the mount shows
	point string // where it is mounted
}

func readCgroup2Mount() (mount, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return mount{}, err
	}
	return parseCgroup2Mount(bytes.NewReader(data))
}

// parseCgroup2Mount finds the cgroup2 mount in /proc/PID/mountinfo. A
// mount of the whole hierarchy (root "/") is preferred to a bind mount of
// part of it.
func parseCgroup2Mount(r io.Reader) (mount, error) {
	mounts, err := mountinfo.Parse(r)
	if err != nil {
		return mount{}, err
	}
	var found []mount
	for _, mi := range mounts {
		if mi.FSType != "cgroup2" {
			continue
		}
		m := mount{root: mi.Root, point: mi.Point}
		if m.root == "/" {
			return m, nil
		}
		found = append(found, m)
	}
	if len(found) == 0 {
		return mount{}, ErrNoCgroup2
	}
	return found[0], nil
}
