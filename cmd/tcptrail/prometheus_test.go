package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/testprog"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

// freePort returns a loopback port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// promQuery asks Prometheus's HTTP API for an instant vector and returns
// its samples' values.
func promQuery(t *testing.T, base, query string) []float64 {
	t.Helper()
	resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(query))
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var r struct {
		Status string
		Data   struct {
			Result []struct {
				Value [2]any
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: status %q, %v", query, r.Status, err)
	}
	var vals []float64
	for _, s := range r.Data.Result {
		v, _ := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
		vals = append(vals, v)
	}
	return vals
}

// TestPrometheusSeesTheLeak: a real Prometheus scrapes a running 'tcptrail
// watch' while the story's client holds its socket in CLOSE_WAIT, and its
// HTTP API answers with the leak: one socket in CLOSE_WAIT held by
// demo-client, older than the leak threshold, one leak counted. The alert
// rules shipped in deploy/ load into it.
func TestPrometheusSeesTheLeak(t *testing.T) {
	privtest.Require(t)
	prom := testprog.Require(t, "prometheus")
	const server, client = "127.0.0.1:17530", "127.0.0.1:17531"
	w := startWatch(t, true, "--port", "17530,17531", "--leak-after", "500ms")

	dir := t.TempDir()
	rules, err := filepath.Abs("../../deploy/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(rules); err != nil {
		t.Fatal(err) // Prometheus would take a missing rule file as no rules
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: tcptrail
    static_configs:
      - targets: [%q]
`, rules, w.metricsAddr)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	p := exec.Command(prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+base[len("http://"):])
	p.Stdout, p.Stderr = logf, logf
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	pdone := make(chan struct{})
	go func() { p.Wait(); close(pdone) }()
	t.Cleanup(func() { p.Process.Kill(); <-pdone })
	promLog := func() string { b, _ := os.ReadFile(logf.Name()); return string(b) }
	testwait.Until(t, 60*time.Second, "Prometheus to be ready", func() bool {
		select {
		case <-pdone:
			t.Fatalf("prometheus exited:\n%s", promLog())
		default:
		}
		resp, err := http.Get(base + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	startDemoServer(t, server)
	cl := exec.Command(demoBinary("demo-client"), "-server", server, "-local", client, "-attempts", "2", "-linger", "2m")
	cl.Stdout, cl.Stderr = io.Discard, os.Stderr
	if err := cl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Process.Kill(); cl.Wait() })

	const who = `{job="tcptrail",comm="demo-client",container=""}`
	testwait.Until(t, 60*time.Second, "Prometheus to hold demo-client's socket in CLOSE_WAIT", func() bool {
		v := promQuery(t, base, "tcptrail_close_wait_sockets"+who)
		return len(v) == 1 && v[0] == 1
	})
	testwait.Until(t, 30*time.Second, "Prometheus to count the leak and its age", func() bool {
		leaks := promQuery(t, base, "tcptrail_leaks_total"+who)
		age := promQuery(t, base, "tcptrail_close_wait_oldest_seconds"+who)
		return len(leaks) == 1 && leaks[0] == 1 && len(age) == 1 && age[0] >= 0.5
	})
	if v := promQuery(t, base, "tcptrail_bind_conflicts_total"); len(v) != 1 || v[0] != 1 {
		t.Errorf("tcptrail_bind_conflicts_total: %v, want 1", v)
	}
	// The alert rules loaded: Prometheus lists their group.
	resp, err := http.Get(base + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct{ Name, Health string }
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			n++
			if rule.Health == "err" {
				t.Errorf("rule %s fails to evaluate", rule.Name)
			}
		}
	}
	if n == 0 {
		t.Errorf("no alert rules loaded from %s:\n%s", rules, promLog())
	}
}
