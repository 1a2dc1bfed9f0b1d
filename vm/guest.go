package main

import (
	"archive/tar"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

//go:embed init.sh
var initScript []byte

// build holds one architecture's static binaries: tcptrail and the demo
// programs in bin/, each test package's `go test -c` binary in
// test/<package dir>/.
type build struct {
	dir string
	err error
}

func buildArch(arch, dir string) *build {
	b := &build{dir: dir}
	if err := os.RemoveAll(dir); err != nil {
		b.err = err
		return b
	}
	gobuild := func(args ...string) error {
		cmd := exec.Command("go", args...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		// The summary line gets the first compiler error; the details all.
		first := err.Error()
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				first = l
				break
			}
		}
		return fmt.Errorf("cannot build for linux/%s: %s\ngo %s:\n%s", arch, first, strings.Join(args, " "), out)
	}
	for _, p := range [][2]string{{"tcptrail", "./cmd/tcptrail"}, {"demo-server", "./demo/server"}, {"demo-client", "./demo/client"}} {
		if b.err = gobuild("build", "-o", filepath.Join(dir, "bin", p[0]), p[1]); b.err != nil {
			return b
		}
	}
	for _, p := range testPackages {
		out := filepath.Join(dir, "test", p, filepath.Base(p)+".test")
		if b.err = gobuild("test", "-c", "-o", out, p); b.err != nil {
			return b
		}
	}
	return b
}

// Per architecture: how qemu boots it, and the port the guest writes its
// results to. QEMU's arm64 virt board has a single PL011 UART, so arm64
// guests send results through a virtio serial port instead.
var qemu = map[string]struct {
	binary  string
	args    []string
	console string
	results func(file string) []string
	device  string   // the results port in the guest
	modules []string // what the guest needs for that port
	// testTimeout bounds each test package in the guest (-test.timeout).
	// Both architectures are emulated instruction by instruction (TCG);
	// arm64 runs the tracer package two to three times slower than amd64
	// (153-218 s against 243-603 s in runs of one day), and a guest shares
	// the host's CPUs with a second one.
	testTimeout time.Duration
}{
	"amd64": {
		binary:      "qemu-system-x86_64",
		args:        []string{"-cpu", "max"},
		console:     "ttyS0",
		results:     func(f string) []string { return []string{"-serial", "file:" + f} },
		device:      "/dev/ttyS1",
		testTimeout: 10 * time.Minute,
	},
	"arm64": {
		binary:  "qemu-system-aarch64",
		args:    []string{"-M", "virt", "-cpu", "max"},
		console: "ttyAMA0",
		results: func(f string) []string {
			return []string{"-device", "virtio-serial-pci", "-chardev", "file,id=results,path=" + f,
				"-device", "virtserialport,chardev=results,name=results"}
		},
		device:      "/dev/vport0p1",
		modules:     []string{"virtio_pci", "virtio_console"},
		testTimeout: 15 * time.Minute,
	},
}

// makeInitrd writes a newc cpio of the guest's root:
//
//	/init, /bin/busybox, /etc/hostname
//	/modules/NN-name.ko   inet_diag, tcp_diag and the results port's, in load order
//	/src/bin/             tcptrail, demo-server, demo-client
//	/src/<pkg>/<pkg>.test the test binaries, each in its package's directory
//	/src/demo/run.sh, /src/tracer/report/testdata/   what the demo and tests read
//	/src/test-skip        the -test.skip pattern
func makeInitrd(path string, k kernel, p *packages, b *build) error {
	root := filepath.Join(filepath.Dir(path), "root")
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "modules", "src"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return err
		}
	}
	files := map[string]string{ // guest path -> host path
		"bin/busybox":                            p.busybox,
		"src/demo/run.sh":                        "demo/run.sh",
		"src/tracer/report/testdata/story.jsonl": "tracer/report/testdata/story.jsonl",
	}
	for _, f := range []string{"tcptrail", "demo-server", "demo-client"} {
		files["src/bin/"+f] = filepath.Join(b.dir, "bin", f)
	}
	for _, pkg := range testPackages {
		rel := filepath.Join(pkg, filepath.Base(pkg)+".test")
		files[filepath.Join("src", rel)] = filepath.Join(b.dir, "test", rel)
	}
	for dst, src := range files {
		if err := copyFile(src, filepath.Join(root, dst)); err != nil {
			return err
		}
	}
	small := map[string]string{
		"init":          string(initScript),
		"etc/hostname":  "guest\n",
		"src/test-skip": "^(" + strings.Join(skipTests, "|") + ")$",
	}
	for name, content := range small {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o755); err != nil {
			return err
		}
	}
	mods, err := moduleFiles(p.modules, append([]string{"inet_diag", "tcp_diag"}, qemu[k.arch].modules...), filepath.Join(root, "modules"))
	if err != nil {
		return err
	}
	for i, m := range mods { // the guest loads /modules/*.ko in glob order
		if err := os.Rename(m, filepath.Join(filepath.Dir(m), fmt.Sprintf("%02d-%s", i+1, filepath.Base(m)))); err != nil {
			return err
		}
	}
	cmd := exec.Command("sh", "-c", `find . | cpio -o -H newc --quiet -R 0:0 > "$0"`, path)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cpio: %v\n%s", err, out)
	}
	return os.RemoveAll(root)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// boot runs the guest until it powers off, panics (panic=-1 reboots and
// -no-reboot exits) or ctx ends. The console goes to console.log, the
// results port to results.tar.
func boot(ctx context.Context, k kernel, vmlinuz, initrd, dir string) error {
	q := qemu[k.arch]
	args := append([]string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		// TCG runs both architectures alike on any host; multi-threaded
		// TCG crashed guests while BPF programs attached and detached.
		"-accel", "tcg,thread=single", "-smp", "2", "-m", "2048",
		"-kernel", vmlinuz, "-initrd", initrd,
		// Parameters the kernel does not know reach /init as variables.
		"-append", "console=" + q.console + " panic=-1 results=" + q.device + " test_timeout=" + q.testTimeout.String(),
		"-serial", "file:" + filepath.Join(dir, "console.log"),
	}, q.args...)
	args = append(args, q.results(filepath.Join(dir, "results.tar"))...)
	if err := os.WriteFile(filepath.Join(dir, "qemu.cmd"), []byte(q.binary+" "+strings.Join(args, " ")+"\n"), 0o644); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, q.binary, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", q.binary, err, out)
	}
	return nil
}

// untar extracts the guest's /out from the results port's file.
func untar(file, dir string) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	n := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if n == 0 {
				return errors.New("the guest sent no results")
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("results truncated: %v", err)
		}
		n++
		dst := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
			continue
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return fmt.Errorf("results truncated in %s: %v", h.Name, err)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			return err
		}
	}
}
