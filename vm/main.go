// Command vm is tcptrail's kernel matrix: it boots Debian's kernels under
// qemu and runs the demo and the privileged test packages inside each, then
// prints one line per kernel and the output of whatever failed. It exits 1
// if any guest failed, timed out or sent no result.
//
//	go run ./vm [flags] [kernel...]    (make test-kernels KERNELS="6.1 arm64-6.1")
//
// A guest is a Debian kernel (its package's vmlinuz and modules), an initrd
// of busybox-static, the static tcptrail, demo and test binaries, and
// vm/init.sh. Packages come through a private apt configuration per suite
// and architecture under the cache directory: the machine's own apt state is
// untouched, and downloads are reused across runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// kernel is one entry of the matrix: the newest linux-image-<series>.*
// -<arch>-unsigned package of a Debian suite.
type kernel struct {
	name   string // on the command line and in KERNELS
	suite  string
	arch   string // Debian's and Go's name alike
	series string
}

var matrix = []kernel{
	{"5.10", "bullseye", "amd64", "5.10"},
	{"6.1", "bookworm", "amd64", "6.1"},
	{"6.12", "trixie", "amd64", "6.12"},
	{"arm64-6.1", "bookworm", "arm64", "6.1"},
}

// testPackages load BPF programs: they run inside every guest. The pure
// packages do not depend on the kernel; `make test` runs them.
var testPackages = []string{"./tracer", "./tracer/kernel", "./tracer/socktable", "./cmd/tcptrail"}

// skipTests is the one list of tests the guests leave out (-test.skip):
// they run real services and clients (nginx, Redis, PostgreSQL, psql,
// redis-cli, Prometheus) or iproute2's ss, which a busybox initrd does
// not have. Everything else a test needs the guest provides.
var skipTests = []string{"TestNginx", "TestRedis", "TestWatchRealServices", "TestPrometheusSeesTheLeak", "TestDestroyed"}

func main() {
	all := make([]string, len(matrix))
	for i, k := range matrix {
		all[i] = k.name
	}
	cache := flag.String("cache", ".cache/kernels", "downloaded packages and private apt state, reused across runs")
	out := flag.String("out", "out/kernels", "per-kernel results: console.log, the guest's /out, the initrd")
	jobs := flag.Int("jobs", 2, "guests run at once (each takes one host CPU)")
	// 0: above the guest's own limits (2m for the demo, the architecture's
	// testTimeout per test package, see init.sh), so that a hung step
	// still reports the rest.
	timeout := flag.Duration("timeout", 0, "hard limit per guest, boot to power-off (0: the guest's own limits and 5m)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: go run ./vm [flags] [kernel...]\nkernels: %s (default: all)\n", strings.Join(all, " "))
		flag.PrintDefaults()
	}
	flag.Parse()
	if _, err := os.Stat("vm/init.sh"); err != nil {
		check(fmt.Errorf("run me from the repository's root (go run ./vm): %v", err))
	}

	var kernels []kernel
	for _, name := range flag.Args() {
		k, ok := find(name)
		if !ok {
			fmt.Fprintf(os.Stderr, "vm: unknown kernel %q (known: %s)\n", name, strings.Join(all, " "))
			os.Exit(2)
		}
		kernels = append(kernels, k)
	}
	if len(kernels) == 0 {
		kernels = matrix
	}
	for _, d := range []*string{cache, out} {
		abs, err := filepath.Abs(*d)
		check(err)
		*d = abs
	}

	// The binaries first, once per architecture. A build failure fails that
	// architecture's kernels with the compiler's message, not the run.
	builds := map[string]*build{}
	for _, k := range kernels {
		if builds[k.arch] == nil {
			logf("build", "static tcptrail, demo and test binaries for linux/%s", k.arch)
			builds[k.arch] = buildArch(k.arch, filepath.Join(*out, "build", k.arch))
		}
	}

	start := time.Now()
	results := make([]*result, len(kernels))
	var wg sync.WaitGroup
	var printMu sync.Mutex
	sem := make(chan struct{}, *jobs)
	for i, k := range kernels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			r := runKernel(k, builds[k.arch], *cache, filepath.Join(*out, k.name), *timeout)
			results[i] = r
			printMu.Lock()
			r.printDetails(os.Stdout)
			printMu.Unlock()
		}()
	}
	wg.Wait()

	fmt.Printf("\nkernel matrix (%s excluded in guests; results in %s), %v:\n",
		strings.Join(skipTests, ", "), *out, time.Since(start).Round(time.Second))
	failed := 0
	for _, r := range results {
		fmt.Println("  " + r.summary())
		if !r.ok() {
			failed++
		}
	}
	if failed > 0 {
		fmt.Printf("FAIL: %d of %d kernels\n", failed, len(results))
		os.Exit(1)
	}
	fmt.Println("PASS")
}

func find(name string) (kernel, bool) {
	for _, k := range matrix {
		if k.name == name {
			return k, true
		}
	}
	return kernel{}, false
}

// runKernel fetches, boots and judges one kernel. Every failure ends up in
// the result, so that the other kernels still run.
func runKernel(k kernel, b *build, cache, dir string, timeout time.Duration) *result {
	r := &result{kernel: k, dir: dir}
	start := time.Now()
	defer func() { r.wall = time.Since(start) }()
	if b.err != nil {
		r.err = b.err
		return r
	}
	check(os.RemoveAll(dir))
	check(os.MkdirAll(dir, 0o755))
	pkgs, err := fetch(k, cache)
	if err != nil {
		r.err = err
		return r
	}
	r.pkgVersion = pkgs.kernelVersion
	logf(k.name, "%s %s", pkgs.kernelPackage, pkgs.kernelVersion)
	initrd := filepath.Join(dir, "initrd.cpio")
	if err := makeInitrd(initrd, k, pkgs, b); err != nil {
		r.err = err
		return r
	}
	if timeout == 0 {
		timeout = 5*time.Minute + 2*time.Minute + time.Duration(len(testPackages))*qemu[k.arch].testTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	logf(k.name, "booting (console: %s)", filepath.Join(dir, "console.log"))
	bootStart := time.Now()
	r.err = boot(ctx, k, pkgs.vmlinuz, initrd, dir)
	r.boot = time.Since(bootStart)
	if ctx.Err() != nil {
		r.err = fmt.Errorf("timed out after %v", timeout)
	}
	r.collect()
	logf(k.name, "done in %v", r.boot.Round(time.Second))
	return r
}

func logf(who, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "vm: %s: %s\n", who, fmt.Sprintf(format, args...))
}

// check stops the run on errors that are the host's, not a kernel's.
func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "vm:", err)
		os.Exit(2)
	}
}
