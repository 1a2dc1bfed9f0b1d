// Package kernel loads tcptrail's BPF programs, attaches them and hands out
// the ring buffer they write to. It is the only package that talks to the
// kernel's BPF subsystem.
package kernel

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target amd64,arm64 -type event tcptrail ../../bpf/tcptrail.bpf.c -- -I../../bpf
