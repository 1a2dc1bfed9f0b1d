// Package mountinfo reads the mounts a process sees, from
// /proc/PID/mountinfo.
package mountinfo

import (
	"bufio"
	"io"
	"os"
	"strings"
)

// A Mount is one line of mountinfo:
//
//	40 30 0:37 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw
//
// (mount id, parent, device, root, mount point, options, optional fields,
// "-", filesystem type, source, super options).
type Mount struct {
	// Root is the part of the filesystem mounted: "/" for the whole of
	// it, a path inside it for a bind mount, net:[N] for a namespace.
	Root   string
	Point  string // where it is mounted
	FSType string
}

// Read reads the mountinfo file at path (/proc/self/mountinfo: the calling
// process's mount namespace).
func Read(path string) ([]Mount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Parse(f)
}

// Parse reads mountinfo lines; lines it cannot read are left out.
func Parse(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, fstype := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(fstype) < 1 {
			continue
		}
		mounts = append(mounts, Mount{Root: Unescape(fields[3]), Point: Unescape(fields[4]), FSType: fstype[0]})
	}
	return mounts, sc.Err()
}

// Unescape undoes the kernel's octal escapes of space, tab, newline and
// backslash in mountinfo's paths ("\040" for a space).
func Unescape(s string) string {
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
