package deploy

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/tcptrail/tcptrail/tracer/metrics"
)

// caps are the capabilities every deployment grants, and the only ones:
// see the comments in each file for why each is needed.
var caps = []string{"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"}

// k8sCaps adds SYS_RESOURCE: a pod cannot lift RLIMIT_MEMLOCK (which kernels
// before 5.11 charge BPF maps to) the way LimitMEMLOCK= and --ulimit do.
var k8sCaps = append(slices.Clone(caps), "SYS_RESOURCE")

// wantNoBoost checks that a deployment's command turns --priority-boost
// off: tcptrail runs in a cgroup of its own there, where a nice value ranks
// it only against itself, and without CAP_SYS_NICE it would warn at every
// start. The deployment's CPU weight ranks it instead.
func wantNoBoost(t *testing.T, what string, args []string) {
	t.Helper()
	for i, a := range args {
		if a == "--priority-boost=0" || a == "--priority-boost" && i+1 < len(args) && args[i+1] == "0" {
			return
		}
	}
	t.Errorf("%s %q: want --priority-boost 0", what, args)
}

// requireTool returns the path of an external tool; without it the test
// is skipped, except under CI=true, where it must be installed.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true but %s is not installed (.ci/run installs it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// buildTcptrail builds cmd/tcptrail (or takes the prebuilt one in
// TCPTRAIL_TEST_BINDIR) and returns its path.
func buildTcptrail(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("TCPTRAIL_TEST_BINDIR"); dir != "" {
		return filepath.Join(dir, "tcptrail")
	}
	bin := filepath.Join(t.TempDir(), "tcptrail")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/tcptrail")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ../cmd/tcptrail: %v\n%s", err, out)
	}
	return bin
}

// checkFlags runs tcptrail with args and --help: it exits 0 only if every
// flag before --help exists.
func checkFlags(t *testing.T, bin string, args []string) {
	t.Helper()
	out, err := exec.Command(bin, append(slices.Clone(args), "--help")...).CombinedOutput()
	if err != nil {
		t.Errorf("tcptrail %s --help: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sameSet reports whether a and b hold the same strings, in any order.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func prefixed(prefix string, s []string) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = prefix + v
	}
	return out
}

// unitSettings returns the unit's Key=Value lines, each key's values in
// order (comments and section headers dropped).
func unitSettings(unit string) map[string][]string {
	m := make(map[string][]string)
	for _, line := range strings.Split(unit, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = append(m[k], v)
		}
	}
	return m
}

// verifyUnit runs systemd-analyze verify on a unit file. systemd-analyze
// exits 0 on an unknown key or a value it cannot parse (it ignores them,
// as systemd does): any output is a failure too.
func verifyUnit(tool, path string) error {
	out, err := exec.Command(tool, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		return fmt.Errorf("systemd-analyze verify %s: %v\n%s", path, err, out)
	}
	return nil
}

func TestSystemdUnit(t *testing.T) {
	tool := requireTool(t, "systemd-analyze")
	unit := readFile(t, "systemd/tcptrail.service")
	set := unitSettings(unit)

	const exe = "/usr/local/bin/tcptrail"
	start := set["ExecStart"]
	if len(start) != 1 || !strings.HasPrefix(start[0], exe+" watch ") {
		t.Fatalf("ExecStart = %q, want one line running %s watch", start, exe)
	}
	args := strings.Fields(start[0])[1:]
	if i := slices.Index(args, "--metrics"); i < 0 || i+1 >= len(args) || args[i+1] != "127.0.0.1:9464" {
		t.Errorf("ExecStart %q: want --metrics 127.0.0.1:9464", start[0])
	}
	wantNoBoost(t, "ExecStart", args)
	// The CPU weight does what the boost would do among processes.
	if w := set["CPUWeight"]; len(w) != 1 || w[0] == "" || w[0] == "idle" {
		t.Errorf("CPUWeight = %q, want one weight above the default", w)
	} else if n, err := strconv.Atoi(w[0]); err != nil || n <= 100 {
		t.Errorf("CPUWeight = %q, want one weight above the default (100)", w[0])
	}

	// Exactly the needed capabilities, granted to the unit's own user.
	for _, key := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		v := set[key]
		if len(v) != 1 || !sameSet(strings.Fields(v[0]), prefixed("CAP_", caps)) {
			t.Errorf("%s = %q, want %v", key, v, prefixed("CAP_", caps))
		}
	}
	// Settings that would stop tcptrail from seeing the host.
	for key, bad := range map[string][]string{
		"PrivateNetwork": {"yes", "true", "on", "1"},
		"PrivateUsers":   {"yes", "true", "on", "1", "self", "identity"},
		"ProcSubset":     {"pid"},
	} {
		for _, v := range set[key] {
			if slices.Contains(bad, v) {
				t.Errorf("%s=%s: tcptrail must see the host's network, capabilities and /proc", key, v)
			}
		}
	}
	for _, v := range set["RestrictNamespaces"] {
		if v != "no" && v != "false" && !slices.Contains(strings.Fields(v), "net") {
			t.Errorf("RestrictNamespaces=%s forbids setns() into network namespaces", v)
		}
	}
	for _, key := range []string{"ProtectSystem", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "Restart", "RestartSec"} {
		if len(set[key]) == 0 {
			t.Errorf("%s is not set", key)
		}
	}

	// systemd-analyze wants ExecStart's binary to exist: the unit is
	// checked with a freshly built tcptrail in its place.
	bin := buildTcptrail(t)
	checkFlags(t, bin, args)
	// Each in a directory of its own: systemd-analyze names units by file.
	writeUnit := func(text string) string {
		p := filepath.Join(t.TempDir(), "tcptrail.service")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	installed := strings.ReplaceAll(unit, exe, bin)
	good := writeUnit(installed)
	if err := verifyUnit(tool, good); err != nil {
		t.Error(err)
	}
	// The check itself must fail on a broken unit.
	for name, broken := range map[string]string{
		"missing binary": strings.ReplaceAll(unit, exe, "/nonexistent/tcptrail"),
		"misspelled key": strings.Replace(installed, "\nProtectHome=", "\nProtectHomes=", 1),
		"bad value":      strings.Replace(installed, "\nRestart=on-failure", "\nRestart=sometimes", 1),
	} {
		if broken == installed {
			t.Fatalf("%s: the unit did not change", name)
		}
		if verifyUnit(tool, writeUnit(broken)) == nil {
			t.Errorf("systemd-analyze verify accepted a unit with a %s", name)
		}
	}

	// The hardening stays on: systemd's own exposure score (0 best, 10
	// worst) fails above 3.5.
	out, err := exec.Command(tool, "security", "--offline=yes", "--threshold=35", "--no-pager", good).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
}

// promRules is the part of a Prometheus rule file the tests read.
type promRules struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// promTests is the part of a promtool test file the tests read.
type promTests struct {
	Tests []struct {
		AlertRuleTest []struct {
			Alertname string            `json:"alertname"`
			ExpAlerts []json.RawMessage `json:"exp_alerts"`
		} `json:"alert_rule_test"`
	} `json:"tests"`
}

// metricLabels returns the metrics tcptrail watch exposes and their labels,
// from the metrics package itself.
func metricLabels(t *testing.T) map[string][]string {
	t.Helper()
	ch := make(chan *prometheus.Desc)
	go func() {
		metrics.New("test").Describe(ch)
		close(ch)
	}()
	name := regexp.MustCompile(`fqName: "([^"]+)"`)
	labels := regexp.MustCompile(`(?:constLabels|variableLabels): \{([^}]*)\}`)
	m := make(map[string][]string)
	for d := range ch {
		s := d.String()
		n := name.FindStringSubmatch(s)
		if n == nil {
			t.Fatalf("no name in %s", s)
		}
		m[n[1]] = []string{}
		for _, l := range labels.FindAllStringSubmatch(s, -1) {
			for _, kv := range strings.Split(l[1], ",") {
				if k, _, _ := strings.Cut(kv, "="); k != "" {
					m[n[1]] = append(m[n[1]], k)
				}
			}
		}
	}
	return m
}

func TestAlertRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
	if out, err := exec.Command(promtool, "check", "rules", "prometheus/alerts.yml").CombinedOutput(); err != nil {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
	test := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	test.Dir = "prometheus"
	if out, err := test.CombinedOutput(); err != nil {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}

	// The unit tests must notice a changed threshold.
	rules := readFile(t, "prometheus/alerts.yml")
	const threshold = "tcptrail_close_wait_oldest_seconds > 300"
	if strings.Count(rules, threshold) != 1 {
		t.Fatalf("alerts.yml has no %q", threshold)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), []byte(strings.Replace(rules, threshold, threshold+"0", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yml"), []byte(readFile(t, "prometheus/alerts_test.yml")), 0o644); err != nil {
		t.Fatal(err)
	}
	mutant := exec.Command(promtool, "test", "rules", "alerts_test.yml")
	mutant.Dir = dir
	if out, err := mutant.CombinedOutput(); err == nil {
		t.Errorf("promtool test rules passed with the threshold at 3000 s:\n%s", out)
	}
}

// TestAlertRulesMatchMetrics checks the rules against the metrics tcptrail
// exposes, and that the unit tests see each alert fire and not fire.
func TestAlertRulesMatchMetrics(t *testing.T) {
	var rules promRules
	if err := yaml.Unmarshal([]byte(readFile(t, "prometheus/alerts.yml")), &rules); err != nil {
		t.Fatal(err)
	}
	var tests promTests
	if err := yaml.Unmarshal([]byte(readFile(t, "prometheus/alerts_test.yml")), &tests); err != nil {
		t.Fatal(err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}

	exposed := metricLabels(t)
	metricRE := regexp.MustCompile(`\btcptrail_[a-z_]+\b`)
	labelRE := regexp.MustCompile(`\$labels\.([a-zA-Z_]+)`)
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			// job and instance: Prometheus's target labels.
			allowed := []string{"job", "instance"}
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				l, ok := exposed[m]
				if !ok {
					t.Errorf("%s: tcptrail exposes no metric %s", r.Alert, m)
				}
				allowed = append(allowed, l...)
			}
			for _, text := range r.Annotations {
				for _, l := range labelRE.FindAllStringSubmatch(text, -1) {
					if !slices.Contains(allowed, l[1]) {
						t.Errorf("%s: annotation uses $labels.%s, which %q does not have", r.Alert, l[1], r.Expr)
					}
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: want a severity label and summary and description annotations", r.Alert)
			}
			if !fires[r.Alert] || !quiet[r.Alert] {
				t.Errorf("%s: alerts_test.yml must see it fire (%v) and not fire (%v)", r.Alert, fires[r.Alert], quiet[r.Alert])
			}
		}
	}
	if n == 0 {
		t.Fatal("no rules in alerts.yml")
	}
}

// k8sObject is the part of a Kubernetes object the tests read.
type k8sObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Template struct {
			Metadata struct {
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec podSpec `json:"spec"`
		} `json:"template"`
	} `json:"spec"`
}

type podSpec struct {
	ServiceAccountName string `json:"serviceAccountName"`
	HostPID            bool   `json:"hostPID"`
	HostNetwork        bool   `json:"hostNetwork"`
	Tolerations        []struct {
		Key      string `json:"key"`
		Operator string `json:"operator"`
	} `json:"tolerations"`
	Containers []k8sContainer `json:"containers"`
	Volumes    []struct {
		Name     string `json:"name"`
		HostPath *struct {
			Path string `json:"path"`
		} `json:"hostPath"`
	} `json:"volumes"`
}

type k8sContainer struct {
	Command []string `json:"command"`
	Args    []string `json:"args"`
	Ports   []struct {
		Name          string `json:"name"`
		ContainerPort int    `json:"containerPort"`
	} `json:"ports"`
	SecurityContext struct {
		Privileged   *bool `json:"privileged"`
		Capabilities struct {
			Add  []string `json:"add"`
			Drop []string `json:"drop"`
		} `json:"capabilities"`
	} `json:"securityContext"`
	VolumeMounts []struct {
		Name             string `json:"name"`
		MountPath        string `json:"mountPath"`
		MountPropagation string `json:"mountPropagation"`
	} `json:"volumeMounts"`
	ReadinessProbe *k8sProbe `json:"readinessProbe"`
	LivenessProbe  *k8sProbe `json:"livenessProbe"`
	Resources      struct {
		Limits map[string]string `json:"limits"`
	} `json:"resources"`
}

type k8sProbe struct {
	HTTPGet *struct {
		Path string `json:"path"`
		Port any    `json:"port"` // a number or a port's name
	} `json:"httpGet"`
}

// metricsPort returns the port of a --metrics ADDR flag in args.
func metricsPort(args []string) (string, bool) {
	for i, a := range args {
		addr, ok := strings.CutPrefix(a, "--metrics=")
		if !ok && a == "--metrics" && i+1 < len(args) {
			addr, ok = args[i+1], true
		}
		if ok {
			_, port, found := strings.Cut(addr, ":")
			return port, found
		}
	}
	return "", false
}

func TestDaemonSet(t *testing.T) {
	text := readFile(t, "kubernetes/daemonset.yaml")
	if regexp.MustCompile(`(?m)^\s*privileged:\s*true`).MatchString(text) {
		t.Error("daemonset.yaml has privileged: true")
	}
	var ds *k8sObject
	accounts := map[string]bool{}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(text, -1) {
		var o k8sObject
		if err := yaml.Unmarshal([]byte(doc), &o); err != nil {
			t.Fatal(err)
		}
		switch o.Kind {
		case "DaemonSet":
			ds = &o
		case "ServiceAccount":
			accounts[o.Metadata.Namespace+"/"+o.Metadata.Name] = true
		}
	}
	if ds == nil {
		t.Fatal("no DaemonSet in daemonset.yaml")
	}
	if ds.APIVersion != "apps/v1" {
		t.Errorf("apiVersion %q, want apps/v1", ds.APIVersion)
	}
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Metadata.Labels[k] != v {
			t.Errorf("selector %s=%s does not select the pods", k, v)
		}
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostPID {
		t.Error("hostPID is not true: tcptrail would see only its own processes")
	}
	if pod.HostNetwork {
		t.Error("hostNetwork is set: not needed, tcptrail enters the node's namespace itself")
	}
	if !accounts[ds.Metadata.Namespace+"/"+pod.ServiceAccountName] {
		t.Errorf("service account %s/%s is not in the file", ds.Metadata.Namespace, pod.ServiceAccountName)
	}
	everywhere := false
	for _, tol := range pod.Tolerations {
		everywhere = everywhere || (tol.Key == "" && tol.Operator == "Exists")
	}
	if !everywhere {
		t.Error("no toleration with operator Exists and no key: tainted nodes would go unwatched")
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext
	if sc.Privileged != nil && *sc.Privileged {
		t.Error("the container is privileged")
	}
	if !sameSet(sc.Capabilities.Add, k8sCaps) {
		t.Errorf("capabilities.add = %v, want %v", sc.Capabilities.Add, k8sCaps)
	}
	if !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("capabilities.drop = %v, want ALL", sc.Capabilities.Drop)
	}

	// One port: the container's, --metrics's and the scrape annotation's.
	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) < 2 || filepath.Base(args[0]) != "tcptrail" || args[1] != "watch" {
		t.Fatalf("command %q, want tcptrail watch", args)
	}
	wantNoBoost(t, "command", args)
	port, ok := metricsPort(args)
	if !ok {
		t.Fatalf("command %q has no --metrics ADDR:PORT", args)
	}
	portName := ""
	for _, p := range c.Ports {
		if fmt.Sprint(p.ContainerPort) == port {
			portName = p.Name
		}
	}
	if portName == "" {
		t.Errorf("no containerPort %s (the --metrics port)", port)
	}
	ann := ds.Spec.Template.Metadata.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port {
		t.Errorf("annotations prometheus.io/scrape=%q prometheus.io/port=%q, want \"true\" and %q", ann["prometheus.io/scrape"], ann["prometheus.io/port"], port)
	}
	if p := ann["prometheus.io/path"]; p != "" && p != "/metrics" {
		t.Errorf("prometheus.io/path=%q, want /metrics", p)
	}
	for name, pr := range map[string]*k8sProbe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if pr == nil || pr.HTTPGet == nil {
			t.Errorf("no %s probe on /metrics", name)
			continue
		}
		if p := fmt.Sprint(pr.HTTPGet.Port); pr.HTTPGet.Path != "/metrics" || (p != port && p != portName) {
			t.Errorf("%s probe on %s port %s, want /metrics on %s", name, pr.HTTPGet.Path, p, port)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("no memory limit")
	}

	// /run/netns from the node, with the mounts made after the pod started.
	netns := false
	for _, m := range c.VolumeMounts {
		for _, v := range pod.Volumes {
			if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == "/run/netns" && m.MountPath == "/run/netns" {
				netns = m.MountPropagation == "HostToContainer"
			}
		}
	}
	if !netns {
		t.Error("no /run/netns hostPath mounted at /run/netns with HostToContainer propagation")
	}

	checkFlags(t, buildTcptrail(t), args[1:])
}

// containerfile is a Containerfile's instructions, continuation lines
// joined and comments dropped.
func containerfile(t *testing.T, path string) [][2]string {
	t.Helper()
	var out [][2]string
	var cur strings.Builder
	sc := bufio.NewScanner(strings.NewReader(readFile(t, path)))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		out = append(out, [2]string{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur.Reset()
	}
	return out
}

// ignored reports whether a .dockerignore's patterns leave rel out of the
// build context: the last pattern that matches rel or a directory above it
// decides; ! patterns bring back.
func ignored(patterns []string, rel string) bool {
	out := false
	parts := strings.Split(rel, "/")
	for _, p := range patterns {
		neg := strings.HasPrefix(p, "!")
		p = strings.TrimSuffix(strings.TrimPrefix(p, "!"), "/")
		for i := range parts {
			if ok, _ := filepath.Match(p, strings.Join(parts[:i+1], "/")); ok {
				out = !neg
				break
			}
		}
	}
	return out
}

// copyTree copies the file src to dst, or the directory src's contents
// into dst.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		to := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return err
		}
		return os.WriteFile(to, b, 0o644)
	})
}

// TestContainerfile runs the Containerfile's build stage with the local Go
// toolchain, in a copy of the build context its .dockerignore leaves, and
// checks the binary and the final stage's entrypoint.
func TestContainerfile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds tcptrail")
	}
	const path = "container/Containerfile"
	var patterns []string
	for _, l := range strings.Split(readFile(t, path+".dockerignore"), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, l)
		}
	}
	root := t.TempDir()
	context := filepath.Join(root, "context")
	err := filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("..", p)
		if rel == "." || d.IsDir() {
			if rel == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if ignored(patterns, filepath.ToSlash(rel)) || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		dst := filepath.Join(context, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}

	// The build stage: ARGs, WORKDIR, COPY from the context, RUN. Its
	// output directory /out is redirected into the test's.
	const outDir = "/out/"
	out := filepath.Join(root, "out") + "/"
	env := append(os.Environ(), "TARGETOS=linux", "TARGETARCH="+runtime.GOARCH, "VERSION=test")
	var work, installed, copied string
	var exposed []string
	stage := ""
	for _, in := range containerfile(t, path) {
		cmd, args := in[0], in[1]
		if cmd == "FROM" {
			f := strings.Fields(args)
			stage = f[len(f)-1]
			continue
		}
		switch {
		case stage == "build" && cmd == "ARG":
			if k, v, ok := strings.Cut(args, "="); ok && !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, k+"=") }) {
				env = append(env, k+"="+v)
			}
		case stage == "build" && cmd == "WORKDIR":
			work = filepath.Join(root, "work", args)
			if err := os.MkdirAll(work, 0o755); err != nil {
				t.Fatal(err)
			}
		case stage == "build" && cmd == "COPY":
			// Docker's rules: a directory's contents go into the
			// destination; a file goes into it if it ends in / or is ".".
			f := strings.Fields(args)
			dst := f[len(f)-1]
			for _, src := range f[:len(f)-1] {
				to := filepath.Join(work, dst)
				if st, err := os.Stat(filepath.Join(context, src)); err == nil && !st.IsDir() && (strings.HasSuffix(dst, "/") || dst == ".") {
					to = filepath.Join(to, filepath.Base(src))
				}
				if err := copyTree(filepath.Join(context, src), to); err != nil {
					t.Fatalf("COPY %s: %v", args, err)
				}
			}
		case stage == "build" && cmd == "RUN":
			run := exec.Command("sh", "-ec", strings.ReplaceAll(args, outDir, out))
			run.Dir, run.Env = work, env
			if b, err := run.CombinedOutput(); err != nil {
				t.Fatalf("RUN %s: %v\n%s", args, err, b)
			}
		case cmd == "COPY" && strings.HasPrefix(args, "--from=build "+outDir):
			f := strings.Fields(args)
			copied = filepath.Join(out, strings.TrimPrefix(f[1], outDir))
			installed = f[len(f)-1]
		case cmd == "ENTRYPOINT":
			var ep []string
			if err := json.Unmarshal([]byte(args), &ep); err != nil {
				t.Fatalf("ENTRYPOINT %s: want the exec (JSON) form: %v", args, err)
			}
			if len(ep) < 2 || ep[0] != installed || ep[1] != "watch" {
				t.Fatalf("ENTRYPOINT %q, want %s watch", ep, installed)
			}
			wantNoBoost(t, "ENTRYPOINT", ep)
			port, ok := metricsPort(ep)
			if !ok {
				t.Fatalf("ENTRYPOINT %q has no --metrics ADDR:PORT", ep)
			}
			exposed = append(exposed, port)
			checkFlags(t, copied, ep[1:])
		case cmd == "EXPOSE":
			exposed = append(exposed, strings.TrimSuffix(args, "/tcp"))
		}
	}
	if copied == "" {
		t.Fatal("the final stage copies no binary from the build stage's " + outDir)
	}
	if len(exposed) != 2 || exposed[0] != exposed[1] {
		t.Errorf("EXPOSE and --metrics ports differ or are missing: %v", exposed)
	}
	f, err := elf.Open(copied)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked: a distroless/static or scratch image cannot run it")
		}
	}
}

// TestDockerRunLines checks the docker run lines in the Containerfile and
// the README grant the capabilities and mounts tcptrail needs.
func TestDockerRunLines(t *testing.T) {
	for _, path := range []string{"container/Containerfile", "README.md"} {
		text := readFile(t, path)
		i := strings.Index(text, "docker run ")
		if i < 0 {
			t.Errorf("%s: no docker run line", path)
			continue
		}
		// The command runs to its first line without a continuation.
		end := regexp.MustCompile(`[^\\]\n`).FindStringIndex(text[i:])
		if end == nil {
			t.Fatalf("%s: docker run line does not end", path)
		}
		line := text[i : i+end[1]]
		var got []string
		for _, m := range regexp.MustCompile(`--cap-add[= ]([A-Z_]+)`).FindAllStringSubmatch(line, -1) {
			got = append(got, m[1])
		}
		if !sameSet(got, caps) {
			t.Errorf("%s: docker run adds %v, want %v", path, got, caps)
		}
		for _, want := range []string{"--cap-drop=ALL", "--pid=host", "/run/netns:/run/netns", "--ulimit memlock=-1", "--cpu-shares="} {
			if !strings.Contains(line, want) {
				t.Errorf("%s: docker run has no %s", path, want)
			}
		}
		if strings.Contains(line, "--privileged") {
			t.Errorf("%s: docker run is --privileged", path)
		}
	}
}
