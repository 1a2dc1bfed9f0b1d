// Package deploy holds no code: its tests check the files that run
// tcptrail watch as a service (systemd/, container/, kubernetes/) and the
// alert rules on its metrics (prometheus/), with the tools that read them
// (systemd-analyze, promtool), a YAML parser and the Go toolchain.
package deploy
