package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// The Debian mirror, the one this machine's apt uses unless overridden.
var (
	mirror         = env("DEBIAN_MIRROR", "http://deb.debian.org/debian")
	securityMirror = env("DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
)

// packages is what a guest needs from Debian, extracted.
type packages struct {
	kernelPackage, kernelVersion string
	vmlinuz                      string
	modules                      string // lib/modules/<release>
	busybox                      string
}

// fetch resolves the newest kernel package of k's series in its suite,
// downloads it and busybox-static unless they are cached, and extracts them.
func fetch(k kernel, cache string) (*packages, error) {
	a, err := newApt(filepath.Join(cache, "apt", k.suite+"-"+k.arch), k.suite, k.arch)
	if err != nil {
		return nil, err
	}
	logf(k.name, "apt-get update (%s %s)", k.suite, k.arch)
	if _, err := a.run("apt-get", "update", "-q"); err != nil {
		return nil, err
	}
	// Debian names kernel packages linux-image-<release>-<flavour>-unsigned,
	// e.g. 5.10.0-46-amd64, 6.12.118+deb13-amd64: the plain flavour only.
	out, err := a.run("apt-cache", "pkgnames", "linux-image-"+k.series+".")
	if err != nil {
		return nil, err
	}
	re := regexp.MustCompile(`^linux-image-` + regexp.QuoteMeta(k.series) + `\.[0-9]+[-+][a-z0-9.]+-` + k.arch + `-unsigned$`)
	var names []string
	for _, n := range strings.Fields(out) {
		if re.MatchString(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no linux-image-%s.*-%s-unsigned in %s", k.series, k.arch, k.suite)
	}
	p := &packages{kernelPackage: newest(names)}
	debs := filepath.Join(cache, "debs")
	kroot, version, err := a.download(p.kernelPackage, debs)
	if err != nil {
		return nil, err
	}
	p.kernelVersion = version
	bbroot, _, err := a.download("busybox-static", debs)
	if err != nil {
		return nil, err
	}
	p.busybox = filepath.Join(bbroot, "bin", "busybox")
	if _, err := os.Stat(p.busybox); err != nil { // trixie's is in /usr/bin
		p.busybox = filepath.Join(bbroot, "usr", "bin", "busybox")
	}
	vmlinuz, _ := filepath.Glob(filepath.Join(kroot, "boot", "vmlinuz-*"))
	mods, _ := filepath.Glob(filepath.Join(kroot, "lib", "modules", "*"))
	if len(mods) == 0 { // trixie's packages use /usr/lib/modules
		mods, _ = filepath.Glob(filepath.Join(kroot, "usr", "lib", "modules", "*"))
	}
	if len(vmlinuz) != 1 || len(mods) != 1 {
		return nil, fmt.Errorf("%s: want one boot/vmlinuz-* and one lib/modules/*, found %q and %q", p.kernelPackage, vmlinuz, mods)
	}
	p.vmlinuz, p.modules = vmlinuz[0], mods[0]
	return p, nil
}

// apt runs apt-get and apt-cache with a private configuration: its own
// sources list, lists, cache and (empty) dpkg status.
type apt struct{ dir, conf string }

func newApt(dir, suite, arch string) (*apt, error) {
	for _, d := range []string{"lists/partial", "cache/archives/partial", "preferences.d", "sources.list.d"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	keyring := "/usr/share/keyrings/debian-archive-keyring.gpg"
	sources := fmt.Sprintf("deb [signed-by=%[1]s] %[2]s %[3]s main\ndeb [signed-by=%[1]s] %[4]s %[3]s-security main\n",
		keyring, mirror, suite, securityMirror)
	// apt drops privileges to _apt for downloads, which cannot write to a
	// private directory: run them as whoever runs this.
	u, err := user.Current()
	if err != nil {
		return nil, err
	}
	conf := fmt.Sprintf(`Dir::Etc::SourceList "%[1]s/sources.list";
Dir::Etc::SourceParts "%[1]s/sources.list.d";
Dir::Etc::PreferencesParts "%[1]s/preferences.d";
Dir::State "%[1]s";
Dir::State::Lists "%[1]s/lists";
Dir::State::status "%[1]s/status";
Dir::Cache "%[1]s/cache";
APT::Architecture "%[2]s";
APT::Architectures { "%[2]s"; };
APT::Sandbox::User "%[3]s";
`, dir, arch, u.Username)
	for name, content := range map[string]string{"sources.list": sources, "apt.conf": conf, "status": ""} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return nil, err
		}
	}
	return &apt{dir, filepath.Join(dir, "apt.conf")}, nil
}

func (a *apt) run(name string, args ...string) (string, error) {
	return a.runIn("", name, args...)
}

func (a *apt) runIn(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "APT_CONFIG="+a.conf, "DEBIAN_FRONTEND=noninteractive")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// download fetches pkg's candidate version into debs unless it is there,
// and returns the directory it is extracted to (also cached) and its version.
func (a *apt) download(pkg, debs string) (root, version string, err error) {
	// --print-uris: 'URL' FILE SIZE HASH, without downloading.
	out, err := a.run("apt-get", "download", "--print-uris", pkg)
	if err != nil {
		return "", "", err
	}
	f := strings.Fields(out)
	if len(f) < 2 {
		return "", "", fmt.Errorf("apt-get download --print-uris %s: %q", pkg, out)
	}
	file := f[1]
	if v := strings.Split(file, "_"); len(v) == 3 {
		version = strings.ReplaceAll(v[1], "%3a", ":")
	}
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", "", err
	}
	deb := filepath.Join(debs, file)
	if _, err := os.Stat(deb); err != nil {
		// Into a directory of its own, then in place: an interrupted
		// download leaves no truncated package to be reused.
		tmp, err := os.MkdirTemp(debs, "download")
		if err != nil {
			return "", "", err
		}
		defer os.RemoveAll(tmp)
		if _, err := a.runIn(tmp, "apt-get", "download", "-q", pkg); err != nil {
			return "", "", err
		}
		if err := os.Rename(filepath.Join(tmp, file), deb); err != nil {
			return "", "", err
		}
	}
	root = strings.TrimSuffix(deb, ".deb")
	if _, err := os.Stat(root); err == nil {
		return root, version, nil
	}
	// Extract next to it, then rename: an interrupted run leaves no half tree.
	tmp := root + ".tmp"
	os.RemoveAll(tmp)
	if out, err := exec.Command("dpkg-deb", "-x", deb, tmp).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	return root, version, os.Rename(tmp, root)
}

// moduleFiles returns the module files that load names (dependencies
// first, each once), decompressed into dir. The packages carry no
// modules.dep (depmod runs at install), so the dependencies come from each
// module's own .modinfo section. Modules built into the kernel are skipped.
func moduleFiles(modules string, names []string, dir string) ([]string, error) {
	files := map[string]string{} // module name -> path
	err := filepath.Walk(modules, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		base := filepath.Base(p)
		if i := strings.Index(base, ".ko"); i > 0 && !fi.IsDir() {
			files[strings.ReplaceAll(base[:i], "-", "_")] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	builtin, _ := os.ReadFile(filepath.Join(modules, "modules.builtin"))
	var order []string
	seen := map[string]bool{}
	var load func(name string) error
	load = func(name string) error {
		if seen[name] {
			return nil
		}
		seen[name] = true
		src, ok := files[name]
		if !ok {
			if isBuiltin(builtin, name) {
				return nil
			}
			return fmt.Errorf("module %s: not in %s", name, modules)
		}
		dst := filepath.Join(dir, name+".ko")
		if err := decompress(src, dst); err != nil {
			return err
		}
		deps, err := moduleDepends(dst)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := load(d); err != nil {
				return err
			}
		}
		order = append(order, dst)
		return nil
	}
	for _, n := range names {
		if err := load(n); err != nil {
			return nil, err
		}
	}
	return order, nil
}

func isBuiltin(list []byte, name string) bool {
	s := bufio.NewScanner(bytes.NewReader(list))
	for s.Scan() {
		base := filepath.Base(s.Text())
		if strings.ReplaceAll(strings.TrimSuffix(base, ".ko"), "-", "_") == name {
			return true
		}
	}
	return false
}

// decompress copies a module, unpacking .ko.xz: busybox's insmod may not.
func decompress(src, dst string) error {
	if !strings.HasSuffix(src, ".xz") {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	}
	out, err := exec.Command("xz", "-dc", src).Output()
	if err != nil {
		return fmt.Errorf("xz -dc %s: %v", src, err)
	}
	return os.WriteFile(dst, out, 0o644)
}

// moduleDepends reads "depends=a,b" from a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "depends="); ok && v != "" {
			return strings.Split(strings.ReplaceAll(v, "-", "_"), ","), nil
		}
	}
	return nil, nil
}

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// natLess orders package names the way versions go: digit runs by value,
// so linux-image-6.12.118 comes after linux-image-6.12.99.
func natLess(a, b string) bool {
	for a != "" && b != "" {
		da, db := digits(a), digits(b)
		if da > 0 && db > 0 {
			na, nb := strings.TrimLeft(a[:da], "0"), strings.TrimLeft(b[:db], "0")
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			if na != nb {
				return na < nb
			}
			a, b = a[da:], b[db:]
			continue
		}
		if a[0] != b[0] {
			return a[0] < b[0]
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func digits(s string) int {
	n := 0
	for n < len(s) && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	return n
}

func newest(names []string) string {
	sort.Slice(names, func(i, j int) bool { return natLess(names[i], names[j]) })
	return names[len(names)-1]
}
