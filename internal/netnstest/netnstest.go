// Package netnstest makes real network namespaces for tests: named and
// mounted under /run/netns as `ip netns add` does, with loopback up, and
// runs programs inside them through nsenter (util-linux or busybox).
package netnstest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is a network namespace that a test made.
type NS struct {
	Name  string
	Path  string // /run/netns/Name: a mount of the namespace
	Inode uint32 // what tcptrail records as "netns"
}

// Self returns the inode of the calling process's network namespace.
func Self(t testing.TB) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// New makes a network namespace with loopback up; it is deleted at the
// end of the test unless Delete ran first.
func New(t testing.TB) *NS {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	ns := &NS{Name: "tcptrail-test-" + hex.EncodeToString(b[:])}
	ns.Path = filepath.Join("/run/netns", ns.Name)
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(ns.Path, os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	err = onThreadIn(func() error { return unix.Unshare(unix.CLONE_NEWNET) }, func() error {
		if err := unix.Mount("/proc/thread-self/ns/net", ns.Path, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("mount the namespace: %w", err)
		}
		return LoopbackUp()
	})
	if err != nil {
		os.Remove(ns.Path)
		t.Fatalf("network namespace %s: %v", ns.Name, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(ns.Path, &st); err != nil {
		t.Fatal(err)
	}
	ns.Inode = uint32(st.Ino)
	t.Cleanup(ns.Delete)
	return ns
}

// Do runs f on a thread inside the namespace: the sockets f opens belong
// to it, and /proc/sys/net is its own.
func (ns *NS) Do(f func() error) error {
	return onThreadIn(func() error {
		target, err := os.Open(ns.Path)
		if err != nil {
			return err
		}
		defer target.Close()
		return unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
	}, f)
}

// onThreadIn runs f on a thread of its own after enter has moved that
// thread to another network namespace, then moves it back. Only the
// calling thread moves; a thread that cannot get back dies with its
// goroutine (it is not unlocked then).
func onThreadIn(enter, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			orig, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				return err
			}
			defer orig.Close()
			if err := enter(); err != nil {
				return fmt.Errorf("enter the namespace: %w", err)
			}
			ferr := f()
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("back to the original namespace: %w", err) // the thread stays locked and dies
			}
			runtime.UnlockOSThread()
			return ferr
		}()
	}()
	return <-errc
}

// LoopbackUp sets lo up in the calling thread's namespace.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// Command runs name inside the namespace.
func (ns *NS) Command(name string, args ...string) *exec.Cmd {
	// -F: busybox nsenter forks by default; the test wants the program's
	// own pid. -nPATH: the form util-linux and busybox both take. "--":
	// busybox would take the program's flags for its own.
	return exec.Command("nsenter", append([]string{"-F", "-n" + ns.Path, "--", name}, args...)...)
}

// Delete unmounts the namespace: it is gone once no process is left in it.
func (ns *NS) Delete() {
	unix.Unmount(ns.Path, unix.MNT_DETACH)
	os.Remove(ns.Path)
}
