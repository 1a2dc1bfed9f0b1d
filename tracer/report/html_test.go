package report

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// artifacts is where browser tests leave their pages and screenshots for a
// person to look at: $ARTIFACTS, or testdata/out (ignored by git).
func artifacts(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("testdata", "out")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// chromium finds a headless browser. Under CI=true a missing browser fails
// the test: the page's own JavaScript draws it, nothing else can check it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is not installed; the HTML report needs a browser test (apt-get install -y chromium)")
	}
	t.Skip("chromium is not installed: skipping the browser test (apt-get install -y chromium to run it)")
	return ""
}

// browse runs headless chromium on url with extra arguments and returns
// its standard output.
func browse(t *testing.T, url string, args ...string) string {
	t.Helper()
	bin := chromium(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--virtual-time-budget=20000", "--window-size=1400,900"}
	cmd := exec.CommandContext(ctx, bin, append(append(base, args...), url)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

func writePage(t *testing.T, path string, c *Capture, f Filter, name string) {
	t.Helper()
	sel, err := c.Select(f)
	if err != nil {
		t.Fatal(err)
	}
	var page bytes.Buffer
	if err := WriteHTML(&page, c, sel, name, HTMLOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// states returns the states of the bar of the socket with this cookie, in
// drawing order, timewait segments marked with "~".
func barStates(t *testing.T, dom, cookie string) []string {
	t.Helper()
	bar := regexp.MustCompile(`(?s)<g [^>]*data-cookie="` + cookie + `"[^>]*>(.*?)</g>`).FindStringSubmatch(dom)
	if bar == nil {
		t.Fatalf("no bar for cookie %s in the page", cookie)
	}
	var states []string
	for _, m := range regexp.MustCompile(`<rect [^>]*class="seg( tw)?[^"]*"[^>]*data-state="([A-Z_0-9]+)"`).FindAllStringSubmatch(bar[1], -1) {
		s := m[2]
		if m[1] != "" {
			s = "~" + s
		}
		states = append(states, s)
	}
	return states
}

func TestHTMLStoryInBrowser(t *testing.T) {
	chromium(t)
	dir := artifacts(t)
	c := load(t, "story.jsonl")
	page := filepath.Join(dir, "story.html")
	writePage(t, page, c, Filter{}, "story.jsonl")
	t.Logf("page and screenshots in %s", dir)

	dom := browse(t, "file://"+page, "--dump-dom")
	if !strings.Contains(dom, `data-ready="1"`) {
		t.Fatalf("the page's script did not finish:\n%.2000s", dom)
	}
	checks := []struct{ what, pattern string }{
		{"the connection, diagnosed as a leak", `<div class="conn diagnosed diag-leak diag-bind_conflict[^"]*" data-conn="1"`},
		{"its name", `#1 127.0.0.1:10001 → 127.0.0.1:7070`},
		{"the client's bar", `<g class="bar" data-role="client" data-cookie="8193">`},
		{"the server's bar", `<g class="bar" data-role="server" data-cookie="8194">`},
		{"the leaking CLOSE_WAIT outlined", `class="seg leak"[^>]*data-state="CLOSE_WAIT"`},
		{"cause marks", `data-kind="transition"`},
		{"the owner's exit", `data-kind="exit"`},
		{"the diagnosis mark", `data-kind="diag"`},
		{"the listener", `<div class="sock" data-cookie="4097">`},
		{"the leak diagnosis", `<div class="diag leak" data-kind="leak">`},
		{"the bind conflict", `<div class="diag bind_conflict" data-kind="bind_conflict">`},
		{"the pager", `page 1 of 1 · 1 connections`},
	}
	for _, ch := range checks {
		if !regexp.MustCompile(ch.pattern).MatchString(dom) {
			t.Errorf("page lacks %s (%s)", ch.what, ch.pattern)
		}
	}
	if got, want := strings.Join(barStates(t, dom, "8193"), " "), "SYN_SENT ESTABLISHED CLOSE_WAIT LAST_ACK"; got != want {
		t.Errorf("client bar %q, want %q", got, want)
	}
	// The axis fits the connection's own changes, to the client's close:
	// the server's timewait socket runs on past the right edge.
	if got, want := strings.Join(barStates(t, dom, "8194"), " "), "SYN_RECV ESTABLISHED FIN_WAIT1 FIN_WAIT2 ~FIN_WAIT2"; got != want {
		t.Errorf("server bar %q, want %q", got, want)
	}
	if got := strings.Join(barStates(t, dom, "4097"), " "); got != "LISTEN" {
		t.Errorf("listener bar %q, want LISTEN", got)
	}
	if strings.Contains(dom, "<script src") || strings.Contains(dom, "<link") || regexp.MustCompile(`(src|href)="https?:`).MatchString(dom) {
		t.Error("the page loads something from outside")
	}

	// A link to the connection opens its sequence diagram.
	dom = browse(t, "file://"+page+"#conn-1", "--dump-dom")
	for _, want := range []string{"CLOSE_WAIT  for 2.49968s", "ran in server[4100]", "exit of pid 4200",
		"◌ TIME_WAIT in a kernel timewait socket, timer 59.75s", "◌ timewait socket gone",
		"◦ accept() = fd 7", "LEAK: 127.0.0.1:10001 → 127.0.0.1:7070"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the connection's details lack %q", want)
		}
	}
	shot := filepath.Join(dir, "story.png")
	browse(t, "file://"+page+"#conn-1", "--screenshot="+shot)
	checkPNG(t, shot)
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG")) || len(b) < 10_000 {
		t.Errorf("screenshot %s is not a picture of a page (%d bytes)", path, len(b))
	}
}

// Ten thousand connections: the page holds them all, shows a page of them
// with the overview and state paths, and loads in a few seconds.
func TestHTMLTenThousandInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: renders ten thousand connections")
	}
	chromium(t)
	dir := artifacts(t)
	var data bytes.Buffer
	synth(t, &data, 10_000, 100)
	c, err := Load(&data)
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "ten-thousand.html")
	writePage(t, page, c, Filter{}, "ten-thousand.jsonl")
	info, _ := os.Stat(page)
	t.Logf("page of %d connections: %d bytes", len(c.Conns), info.Size())

	start := time.Now()
	dom := browse(t, "file://"+page, "--dump-dom")
	t.Logf("loaded and drawn in %v", time.Since(start))
	if !strings.Contains(dom, `data-ready="1"`) {
		t.Fatal("the page's script did not finish")
	}
	if n := strings.Count(dom, `<div class="conn`); n != 100 {
		t.Errorf("%d connection rows drawn, want a page of 100", n)
	}
	for _, want := range []string{"page 1 of 100 · 10000 connections", "State paths: 2 distinct",
		"Connections started over time", `data-conn="100"`, "Diagnoses (100)"} {
		if !strings.Contains(dom, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(dom, `data-conn="101"`) {
		t.Error("more than one page drawn")
	}
	shot := filepath.Join(dir, "ten-thousand.png")
	browse(t, "file://"+page, "--screenshot="+shot)
	checkPNG(t, shot)
}
