// Package scope turns what a user names to trace (a network namespace, a
// container, a cgroup) into what the kernel side filters on: a namespace's
// inode and cgroup v2 ids.
package scope

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/tracer/container"
)

// NetNS resolves a network namespace given as its inode number, as a path
// to one (/run/netns/NAME, /proc/PID/ns/net), or as a name under
// /run/netns.
func NetNS(arg string) (uint32, error) {
	if n, err := strconv.ParseUint(arg, 10, 32); err == nil && n != 0 {
		return uint32(n), nil
	}
	path := arg
	if !strings.Contains(arg, "/") {
		path = filepath.Join("/run/netns", arg)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("network namespace %s: %w", arg, err)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err == nil && sfs.Type != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("network namespace %s: %s is not a namespace (want /run/netns/NAME, /proc/PID/ns/net or an inode number)", arg, path)
	}
	return uint32(st.Ino), nil
}

// Cgroup resolves a cgroup v2 path (as /proc/PID/cgroup shows it, e.g.
// /system.slice/nginx.service) to its id and those of every cgroup below
// it: a socket belongs to the cgroup of the process that created it.
func Cgroup(path string) ([]uint64, error) {
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	root, err := container.Cgroup2Mount()
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", path, err)
	}
	if _, err := container.CgroupID(path); err != nil {
		return nil, err
	}
	return tree(filepath.Join(root, path))
}

// Container resolves a container id or id prefix to the container's full
// id and the ids of its cgroups (the one its processes run in and those
// below), by the cgroup names container runtimes give.
func Container(prefix string) (id string, cgroups []uint64, err error) {
	prefix = strings.ToLower(prefix)
	if prefix == "" || strings.Trim(prefix, "0123456789abcdef") != "" {
		return "", nil, fmt.Errorf("container %q: want a container id or a prefix of one (hex digits)", prefix)
	}
	root, err := container.Cgroup2Mount()
	if err != nil {
		return "", nil, fmt.Errorf("container %s: %w", prefix, err)
	}
	found := map[string][]string{} // id -> its cgroup directories
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a cgroup removed meanwhile
		}
		if !d.IsDir() {
			return nil
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		if cid, ok := container.IDFromCgroupPath(rel); ok && strings.HasPrefix(cid, prefix) {
			found[cid] = append(found[cid], p)
		}
		return nil
	})
	if err != nil {
		return "", nil, err
	}
	switch len(found) {
	case 0:
		return "", nil, fmt.Errorf("container %s: no running container has an id starting so", prefix)
	case 1:
	default:
		ids := make([]string, 0, len(found))
		for cid := range found {
			ids = append(ids, cid[:12])
		}
		sort.Strings(ids)
		return "", nil, fmt.Errorf("container %s: several containers match (%s): give more of the id", prefix, strings.Join(ids, ", "))
	}
	for cid, dirs := range found {
		id = cid
		seen := map[uint64]bool{}
		for _, dir := range dirs {
			ids, err := tree(dir)
			if err != nil {
				return "", nil, err
			}
			for _, c := range ids {
				if !seen[c] {
					seen[c] = true
					cgroups = append(cgroups, c)
				}
			}
		}
	}
	return id, cgroups, nil
}

// tree returns the cgroup ids (directory inodes) of dir and below.
func tree(dir string) ([]uint64, error) {
	var ids []uint64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == dir {
				return err
			}
			return nil
		}
		if !d.IsDir() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		ids = append(ids, st.Ino)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return ids, nil
}
