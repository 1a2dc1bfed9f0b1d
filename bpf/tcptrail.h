/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The record the kernel side hands to user space. bpf2go generates the Go
 * type (tracerTcptrailEvent) from this definition, and the decoder's layout
 * test checks the two agree. */
#ifndef TCPTRAIL_H
#define TCPTRAIL_H

enum tt_event_kind {
	TT_EVENT_STATE = 1, /* a socket changed TCP state */
	TT_EVENT_CALL = 2,  /* a socket syscall that matters but changed no state */
	TT_EVENT_EXIT = 3,  /* the last thread of a process exited */
	TT_EVENT_FORK = 4,  /* a process forked: the child holds the parent's fds */
};

/* The socket syscall a record belongs to (or, for a transition, ran inside). */
enum tt_call {
	TT_CALL_NONE = 0,
	TT_CALL_CONNECT = 1,
	TT_CALL_ACCEPT = 2,
	TT_CALL_BIND = 3,
	TT_CALL_LISTEN = 4,
	TT_CALL_CLOSE = 5,
	TT_CALL_SHUTDOWN = 6,
	TT_CALL_DUP = 7,         /* dup, dup2, dup3: a new fd on the socket */
	TT_CALL_CLOSE_RANGE = 8, /* close_range(2): fd is the range's first fd */
	TT_CALL_DUP_OVER = 9,    /* dup2/dup3 replaced fd, which held the socket */
	TT_CALL_EXECVE = 10,     /* execve/execveat closed close-on-exec fds */
};

enum tt_flags {
	TT_FLAG_EXITING = 1, /* the current task was exiting (PF_EXITING) */
	TT_FLAG_PEER_FIN = 2, /* the peer's FIN had arrived (SOCK_DONE) */
	TT_FLAG_AFTER_CALL = 4, /* ran after the call returned, while its file was released */
	TT_FLAG_RST_SENT = 8, /* to CLOSE: the kernel had just reset the connection itself */
};

/* Socket identities made up by tcptrail where the kernel cannot give programs
 * of this type a socket cookie: this bit is set in them, never in a cookie
 * (a counter from 1). Below 2^53, so that JSON readers keep them exact. */
#define TT_SYNTHETIC_ID (1ULL << 52)

/* Settings, written by the loader before the programs are loaded: the
 * filters, and what the running kernel offers (found by probing). */
struct config {
	__u64 wakeup_bytes;  /* wake the reader once this much is pending (0: always) */
	__u32 filter_tgid;   /* only sockets owned by this process (0: every process) */
	__u8 filter_ports;   /* port_bits says which ports are traced */
	__u8 cookie_helper;  /* bpf_get_socket_cookie() works in tracing programs (5.12+) */
	__u8 task_btf;       /* bpf_get_current_task_btf() exists (5.11+) */
	__u8 filter_cgroups; /* only sockets whose cgroup is in cgroup_filter */
	__u32 filter_netns;  /* only sockets of this network namespace (inode; 0: all) */
	__u32 _pad;
	__u64 port_bits[1024]; /* bit p: port p is traced, as local or remote port */
};

struct event {
	__u64 ts_ns;     /* CLOCK_MONOTONIC */
	__u64 cookie;    /* socket cookie; 0 when the kernel has not made one yet */
	__u8 saddr[16];  /* local address: IPv4 in the first 4 bytes */
	__u8 daddr[16];  /* remote address */
	__u32 pid;       /* tgid of the task that was current (context, not owner) */
	__u32 tid;
	__s32 fd;        /* fd of the call this ran inside, or the call's fd; -1 */
	__s32 ret;       /* call events: the syscall's return value */
	__s32 sk_err;    /* the socket's pending error (why a socket closed) */
	__u32 arg;       /* shutdown: how; fork: the child's pid; dup: the old fd */
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
	__u8 kind;       /* enum tt_event_kind */
	__u8 oldstate;   /* call events: the socket's state at syscall entry */
	__u8 newstate;   /* call events: its state at syscall exit */
	__u8 call;       /* enum tt_call */
	__u8 flags;      /* enum tt_flags */
	__u8 _pad[3];
	char comm[16];
	__u64 cgroup;    /* socket events: the cgroup (v2) of the socket's creator; others: the task's */
	__u32 netns;     /* socket events: the inode of the socket's network namespace; 0 otherwise */
	__u32 _pad2;
};

#endif
