package socktable

import (
	"os"
	"strconv"
	"strings"
)

// FDOwner is a process holding a socket inode through an fd.
type FDOwner struct {
	PID  uint32
	FD   int32
	Comm string
}

// OwnersOf scans /proc for the fds that refer to the given socket inodes.
// It reads every process's fd table, so call it rarely: at start, and when
// a diagnosis needs the holder of a socket older than the trace.
//
// It needs no network namespace: socket inodes come from one filesystem
// (sockfs) for the whole host, so they are unique across namespaces, and a
// process's fd links show them whichever namespace the socket is in. It
// sees the processes of our pid namespace (all of them on the host's).
func OwnersOf(inodes map[uint32]bool) map[uint32][]FDOwner {
	out := make(map[uint32][]FDOwner)
	if len(inodes) == 0 {
		return out
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	for _, p := range procs {
		pid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil {
			continue
		}
		dir := "/proc/" + p.Name() + "/fd"
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // gone, or a kernel thread
		}
		comm := ""
		for _, fd := range fds {
			link, err := os.Readlink(dir + "/" + fd.Name())
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(link[len("socket:["):], "]"), 10, 32)
			if err != nil || !inodes[uint32(ino)] {
				continue
			}
			n, err := strconv.ParseInt(fd.Name(), 10, 32)
			if err != nil {
				continue
			}
			if comm == "" {
				b, _ := os.ReadFile("/proc/" + p.Name() + "/comm")
				comm = strings.TrimSpace(string(b))
			}
			out[uint32(ino)] = append(out[uint32(ino)], FDOwner{PID: uint32(pid), FD: int32(n), Comm: comm})
		}
	}
	return out
}
