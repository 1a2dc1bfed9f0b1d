package socktable

import (
	"bytes"
	"encoding/binary"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
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
//
// A busy host has hundreds of thousands of fds: each is read relative to
// its process's open fd directory (one path component for the kernel to
// resolve, not five) into a reused buffer, with nothing allocated per fd.
func OwnersOf(inodes map[uint32]bool) map[uint32][]FDOwner {
	out := make(map[uint32][]FDOwner)
	if len(inodes) == 0 {
		return out
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return out
	}
	var s fdScan
	for _, p := range procs {
		pid, err := strconv.ParseUint(p.Name(), 10, 32)
		if err != nil {
			continue
		}
		s.process(uint32(pid), inodes, out)
	}
	return out
}

// fdScan holds the buffers of one scan.
type fdScan struct {
	dents [32 << 10]byte
	link  [64]byte
}

// process adds the fds of process pid that refer to inodes to out.
func (s *fdScan) process(pid uint32, inodes map[uint32]bool, out map[uint32][]FDOwner) {
	name := strconv.FormatUint(uint64(pid), 10)
	dir, err := unix.Open("/proc/"+name+"/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return // gone, or a kernel thread
	}
	defer unix.Close(dir)
	comm := ""
	for {
		n, err := unix.Getdents(dir, s.dents[:])
		if err != nil || n <= 0 {
			return
		}
		for b := s.dents[:n]; len(b) > 0; {
			// struct linux_dirent64: ino u64, off s64, reclen u16,
			// type u8, then the name, NUL-terminated.
			if len(b) < 19 {
				return
			}
			reclen := int(binary.NativeEndian.Uint16(b[16:18]))
			if reclen < 20 || reclen > len(b) {
				return
			}
			fdName := b[19:reclen]
			b = b[reclen:]
			if i := bytes.IndexByte(fdName, 0); i >= 0 {
				fdName = fdName[:i]
			}
			fd, ok := parseUint(fdName)
			if !ok {
				continue // . and ..
			}
			ino, ok := s.socketInode(dir, fdName)
			if !ok || !inodes[ino] {
				continue
			}
			if comm == "" {
				c, _ := os.ReadFile("/proc/" + name + "/comm")
				comm = strings.TrimSpace(string(c))
			}
			out[ino] = append(out[ino], FDOwner{PID: pid, FD: int32(fd), Comm: comm})
		}
	}
}

// socketInode reads the link of fd fdName in the fd directory dir and
// returns its inode when it is a socket ("socket:[12345]").
func (s *fdScan) socketInode(dir int, fdName []byte) (uint32, bool) {
	var path [24]byte
	if len(fdName) >= len(path) {
		return 0, false
	}
	copy(path[:], fdName) // NUL-terminated by the zeroed rest
	n, err := readlinkat(dir, &path[0], s.link[:])
	if err != nil {
		return 0, false
	}
	return socketLinkInode(s.link[:n])
}

// socketLinkInode parses the inode out of an fd link "socket:[12345]".
func socketLinkInode(link []byte) (uint32, bool) {
	const prefix = "socket:["
	if len(link) < len(prefix)+2 || string(link[:len(prefix)]) != prefix || link[len(link)-1] != ']' {
		return 0, false
	}
	ino, ok := parseUint(link[len(prefix) : len(link)-1])
	return uint32(ino), ok && ino <= 1<<32-1
}

// parseUint parses a decimal number of at most 10 digits.
func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	return v, true
}
