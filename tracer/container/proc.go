package container

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Hierarchy is one line of /proc/PID/cgroup, "hierarchy-ID:controllers:path":
// the process's cgroup in one hierarchy.
type Hierarchy struct {
	ID          int      // 0 for the cgroup v2 (unified) hierarchy
	Controllers []string // v1 controllers, and "name=systemd" for systemd's named hierarchy; none on v2
	Path        string   // from the root of the hierarchy, as seen from the reader's cgroup namespace
}

// Unified reports whether h is the cgroup v2 hierarchy's line, "0::path".
func (h Hierarchy) Unified() bool { return h.ID == 0 && len(h.Controllers) == 0 }

func (h Hierarchy) has(controller string) bool {
	for _, c := range h.Controllers {
		if c == controller {
			return true
		}
	}
	return false
}

// ProcCgroups is /proc/PID/cgroup: one line on a cgroup v2 host; one per
// mounted v1 hierarchy on a v1 host; both on a hybrid host (v1 controllers
// plus systemd's unified hierarchy, often at /sys/fs/cgroup/unified).
type ProcCgroups []Hierarchy

// deleted is what the kernel appends to a v2 path whose cgroup was removed
// while the process still belongs to it (a zombie, or a reader racing an
// exit). The path still names the container the process ran in.
const deleted = " (deleted)"

// ParseProcCgroup parses the contents of /proc/PID/cgroup.
func ParseProcCgroup(r io.Reader) (ProcCgroups, error) {
	var out ProcCgroups
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20) // a deep path can outgrow the default 64 KiB line
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		idField, rest, ok1 := strings.Cut(line, ":")
		ctrlField, path, ok2 := strings.Cut(rest, ":") // the path itself may hold ':'
		id, err := strconv.Atoi(idField)
		if !ok1 || !ok2 || err != nil || id < 0 || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("cgroup line %q: want hierarchy-ID:controllers:/path", line)
		}
		h := Hierarchy{ID: id, Path: path}
		if ctrlField != "" {
			h.Controllers = strings.Split(ctrlField, ",")
		}
		if h.Unified() {
			h.Path = strings.TrimSuffix(h.Path, deleted)
		}
		out = append(out, h)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup lines")
	}
	return out, nil
}

// Unified returns the process's cgroup v2 path: the one CgroupID takes and
// bpf_get_current_cgroup_id() reports, since BPF's cgroup helpers look at
// the v2 hierarchy even on a hybrid host. ok is false on a v1-only kernel
// configuration that lists no "0::" line.
func (cs ProcCgroups) Unified() (path string, ok bool) {
	for _, h := range cs {
		if h.Unified() {
			return h.Path, true
		}
	}
	return "", false
}

// Controller returns the path in the v1 hierarchy that holds controller
// ("memory", "pids", "name=systemd"; co-mounted controllers such as
// "cpu,cpuacct" are found by either name).
func (cs ProcCgroups) Controller(controller string) (path string, ok bool) {
	for _, h := range cs {
		if h.has(controller) {
			return h.Path, true
		}
	}
	return "", false
}

// preferred are the v1 hierarchies looked at first, in this order:
//
//   - pids and memory exist on every v1 host that runs containers (Docker and
//     the kubelet require memory; pids has been in every kernel and runtime
//     for years), runtimes create each container's cgroup in both, and
//     neither is co-mounted under a name that varies by distribution the way
//     "cpu,cpuacct" or "net_cls,net_prio" are;
//   - name=systemd carries the systemd driver's scopes, and is the only
//     hierarchy a rootless runtime may write to on cgroup v1 (no controller
//     is delegated to a user there), so rootless Podman's containers appear
//     only in it.
//
// Other v1 controllers (cpuset, devices, freezer, net_cls…) are consulted
// after those and the unified line: some runtimes leave a container at a
// parent's cgroup in them.
var preferred = [...]string{"pids", "memory", "name=systemd"}

// order returns the hierarchies in the order Path consults them: pids,
// memory, name=systemd, the unified hierarchy, then the rest as listed.
func (cs ProcCgroups) order(yield func(Hierarchy) bool) {
	done := make([]bool, len(cs))
	for _, c := range preferred {
		for i, h := range cs {
			if !done[i] && h.has(c) {
				done[i] = true
				if !yield(h) {
					return
				}
			}
		}
	}
	for i, h := range cs {
		if !done[i] && h.Unified() {
			done[i] = true
			if !yield(h) {
				return
			}
		}
	}
	for i, h := range cs {
		if !done[i] && !yield(h) {
			return
		}
	}
}

// Path returns the one cgroup path that best says where the process runs:
// the first path, in the order pids, memory, name=systemd, unified, other
// v1 hierarchies, that names a container; failing that, the first in that
// order that is not the root; failing that, "/".
//
// On a cgroup v2 host there is one line and no choice. On v1 and hybrid
// hosts the hierarchies can disagree: a runtime may create its cgroups in
// the v1 controllers only, or systemd may have put a process in a slice in
// memory but left it at the root of pids; a container's id in any of them
// means the runtime put the process there.
func (cs ProcCgroups) Path() string {
	first := ""
	for h := range cs.order {
		if _, ok := IDFromCgroupPath(h.Path); ok {
			return h.Path
		}
		if first == "" && h.Path != "/" {
			first = h.Path
		}
	}
	if first == "" {
		return "/"
	}
	return first
}

// ReadProcCgroups reads and parses /proc/PID/cgroup.
func ReadProcCgroups(pid uint32) (ProcCgroups, error) {
	data, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/cgroup")
	if err != nil {
		return nil, err // *PathError: errors.Is(err, fs.ErrNotExist) once the process is gone
	}
	cs, err := ParseProcCgroup(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	return cs, nil
}

// ProcCgroup returns the cgroup path of process pid, chosen as
// ProcCgroups.Path chooses it among the hierarchies /proc/PID/cgroup lists.
func ProcCgroup(pid uint32) (path string, err error) {
	cs, err := ReadProcCgroups(pid)
	if err != nil {
		return "", err
	}
	return cs.Path(), nil
}

// OfPID returns the id of the container process pid runs in, "" when it
// runs in none. The error is /proc's: the process is gone, or /proc is not
// the host's.
func OfPID(pid uint32) (id string, err error) {
	path, err := ProcCgroup(pid)
	if err != nil {
		return "", err
	}
	id, _ = IDFromCgroupPath(path)
	return id, nil
}
