package container

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/privtest"
)

func TestParseCgroup2Mount(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo string
		want            mount
		err             error
	}{
		{
			name: "v2 host",
			mountinfo: `22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
30 25 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`,
			want: mount{root: "/", point: "/sys/fs/cgroup"},
		},
		{
			name: "hybrid host",
			mountinfo: `30 22 0:27 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:28 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:29 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
34 30 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
`,
			want: mount{root: "/", point: "/sys/fs/cgroup/unified"},
		},
		{
			name: "v1-only host",
			mountinfo: `30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
`,
			err: ErrNoCgroup2,
		},
		{
			name:      "no optional fields, escaped mount point",
			mountinfo: `40 30 0:37 / /mnt/cgroup\0402 rw,relatime - cgroup2 none rw` + "\n",
			want:      mount{root: "/", point: "/mnt/cgroup 2"},
		},
		{
			name: "a bind mount of a subtree, then the whole",
			mountinfo: `50 22 0:27 /system.slice /run/sub rw,relatime shared:9 - cgroup2 cgroup2 rw
30 25 0:27 / /sys/fs/cgroup rw,relatime shared:9 - cgroup2 cgroup2 rw
`,
			want: mount{root: "/", point: "/sys/fs/cgroup"},
		},
		{
			name:      "only a subtree",
			mountinfo: `50 22 0:27 /system.slice /run/sub rw,relatime shared:9 - cgroup2 cgroup2 rw` + "\n",
			want:      mount{root: "/system.slice", point: "/run/sub"},
		},
		{
			name:      "empty",
			mountinfo: "",
			err:       ErrNoCgroup2,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := parseCgroup2Mount(strings.NewReader(tc.mountinfo))
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Errorf("err = %v; want %v", err, tc.err)
				}
				return
			}
			if err != nil || m != tc.want {
				t.Errorf("parseCgroup2Mount = %+v, %v; want %+v", m, err, tc.want)
			}
		})
	}
}

func TestCgroupIDErrors(t *testing.T) {
	if _, err := Cgroup2Mount(); errors.Is(err, ErrNoCgroup2) {
		t.Skip("no cgroup2 here")
	}
	if _, err := CgroupID("/no-such-cgroup-" + randomID(t)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing cgroup: err = %v; want fs.ErrNotExist", err)
	}
	for _, p := range []string{"", "system.slice", "/../system.slice", "/a/../../b"} {
		if id, err := CgroupID(p); err == nil {
			t.Errorf("CgroupID(%q) = %d; want an error", p, id)
		}
	}
	// The root of the cgroup namespace always exists: the mount's own
	// directory.
	mnt, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(mnt)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := CgroupID("/"); err != nil || id != fi.Sys().(*syscall.Stat_t).Ino {
		t.Errorf("CgroupID(/) = %d, %v; want the inode of %s", id, err, mnt)
	}
}

// TestContainerCgroup makes the cgroup Docker's systemd driver makes for a
// container, puts a process in it, and checks what the package says about
// that process.
func TestContainerCgroup(t *testing.T) {
	privtest.Require(t)
	mnt, err := Cgroup2Mount()
	if err != nil {
		t.Fatal(err)
	}
	id := randomID(t)
	slice := filepath.Join(mnt, "system.slice")
	if err := os.Mkdir(slice, 0o755); err == nil {
		t.Cleanup(func() { rmdirCgroup(t, slice) })
	} else if !errors.Is(err, fs.ErrExist) {
		t.Fatal(err)
	}
	dir := filepath.Join(slice, "docker-"+id+".scope")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rmdirCgroup(t, dir) }) // runs after the child is reaped below

	child := exec.Command("sleep", "30")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		child.Process.Kill()
		child.Wait()
	})
	pid := uint32(child.Process.Pid)
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(int(pid))), 0); err != nil {
		t.Fatal(err)
	}

	got, err := OfPID(pid)
	if err != nil || got != id {
		t.Errorf("OfPID = %q, %v; want %q", got, err, id)
	}
	cs, err := ReadProcCgroups(pid)
	if err != nil {
		t.Fatal(err)
	}
	want := "/system.slice/docker-" + id + ".scope"
	if p := cs.Path(); p != want {
		t.Errorf("ProcCgroups.Path() = %q; want %q", p, want)
	}
	unified, ok := cs.Unified()
	if !ok || unified != want {
		t.Fatalf("Unified() = %q, %v; want %q", unified, ok, want)
	}
	cgid, err := CgroupID(unified)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ino := fi.Sys().(*syscall.Stat_t).Ino; cgid != ino {
		t.Errorf("CgroupID = %d; the directory's inode is %d", cgid, ino)
	}
	if self, err := CgroupID("/"); err == nil && self == cgid {
		t.Errorf("the container's cgroup id %d is the root's", cgid)
	}

	c := NewCache(4)
	if got := c.Lookup(pid); got != id {
		t.Errorf("Cache.Lookup = %q; want %q", got, id)
	}
}

// rmdirCgroup removes a cgroup directory. The kernel may take a moment to
// notice that a killed process has left it.
func rmdirCgroup(t *testing.T, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, fs.ErrNotExist) {
			return
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			t.Errorf("removing cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func randomID(t *testing.T) string {
	b := make([]byte, IDLen/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
