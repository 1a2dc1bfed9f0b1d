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
	TT_CALL_DUP = 7,
};

enum tt_flags {
	TT_FLAG_EXITING = 1, /* the current task was exiting (PF_EXITING) */
	TT_FLAG_PEER_FIN = 2, /* the peer's FIN had arrived (SOCK_DONE) */
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
};

#endif
