// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//go:build ignore

/*
 * tcptrail's kernel side.
 *
 * Every TCP state change goes through the sock:inet_sock_set_state
 * tracepoint. It is attached as tp_btf (BTF-typed raw tracepoint): that needs
 * no tracefs and allows bpf_get_socket_cookie(), which gives every socket an
 * identity that survives address reuse and the hand-over to a timewait socket.
 *
 * Transitions often run in a task that does not own the socket (on loopback
 * the server's accepted socket changes state inside the client's connect()),
 * so the syscalls that cause transitions are traced too: sys_enter remembers,
 * per thread, which socket a connect/accept/bind/listen/close/shutdown is
 * working on, the transition handler checks whether it runs inside that very
 * call on that very socket, and sys_exit reports the calls that matter but
 * changed no state (accept, a close that only dropped one reference, failed
 * binds and connects, dup). Process fork and exit complete the ownership
 * picture.
 *
 * Filtering happens here, before anything is reserved in the ring buffer.
 */

#include "kernel_types.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "tcptrail.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_MPTCP 262
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define PF_EXITING 0x00000004
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define SOCK_DONE 1 /* enum sock_flags: set when the peer's FIN is received */
#define TCP_LISTEN 10

/* Syscall numbers of the calls tcptrail correlates, and where a syscall's
 * arguments and number are in the registers it entered with. */
#if defined(__TARGET_ARCH_x86)
#define NR_close 3
#define NR_dup 32
#define NR_dup2 33
#define NR_dup3 292
#define NR_connect 42
#define NR_accept 43
#define NR_shutdown 48
#define NR_bind 49
#define NR_listen 50
#define NR_execve 59
#define NR_accept4 288
#define NR_execveat 322
#define NR_close_range 436
#define SYSCALL_ARG1(regs) ((regs)->di)
#define SYSCALL_ARG2(regs) ((regs)->si)
#define SYSCALL_NR(regs) ((regs)->orig_ax)
#elif defined(__TARGET_ARCH_arm64)
#define NR_dup 23
#define NR_dup2 -1 /* arm64 has dup3 only */
#define NR_dup3 24
#define NR_close 57
#define NR_bind 200
#define NR_listen 201
#define NR_accept 202
#define NR_connect 203
#define NR_shutdown 210
#define NR_execve 221
#define NR_accept4 242
#define NR_execveat 281
#define NR_close_range 436
#define SYSCALL_ARG1(regs) ((regs)->regs[0])
#define SYSCALL_ARG2(regs) ((regs)->regs[1])
#define SYSCALL_NR(regs) ((regs)->syscallno)
#endif

/* Settings and kernel features, written by the loader before load. Branches
 * on them are resolved by the verifier, so a helper the kernel lacks is never
 * seen by it when the setting says not to use it. */
const volatile struct config cfg = {};

/* Counters read by user space (the .bss map). Every loss has a counter. */
__u64 ringbuf_full = 0;      /* events dropped: no room in the ring buffer */
__u64 inflight_full = 0;     /* syscalls not correlated: inflight map full */

/* The address of the kernel's file operations for sockets (socket_file_ops),
 * learnt from the first socket fd_to_tcp_sock finds (the loader shows it
 * one); 0 until then. */
__u64 socket_fops = 0;

/*
 * events: every record for user space, struct event. Written by all programs,
 * consumed by the Go reader.
 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the loader */
	__type(value, struct event);
} events SEC(".maps");

/* What a thread's current (or just finished) syscall is working on. */
struct inflight {
	__u64 sk;        /* the socket behind fd (0: not a traced socket yet) */
	__u64 uaddr;     /* bind/connect: the user's sockaddr */
	__u64 victim_sk; /* dup2/dup3: the socket the new fd held, closed by the call */
	__s32 fd;
	__s32 victim_fd; /* dup2/dup3: the fd that is replaced */
	__u32 arg;       /* shutdown: how; close_range: the last fd */
	__u8 call;       /* enum tt_call */
	__u8 changed;    /* a transition ran inside the call on this socket */
	__u8 mptcp;      /* fd's socket is an MPTCP socket: its TCP subflow changes state */
	__u8 state;      /* the socket's state at entry */
	__u8 shared;     /* the fd's file had other references at entry */
	__u8 exited;     /* the call returned; its file release may still be pending */
	__u8 _pad[2];
};

/*
 * inflight: pid_tgid -> the socket syscall that thread is in. Inserted at
 * sys_enter of connect/accept/bind/listen/close/shutdown/dup*, close_range
 * and execve on a TCP socket (close_range and execve on any fds), deleted at
 * its sys_exit, or when the thread exits (a thread killed inside a blocking
 * accept never reaches sys_exit).
 *
 * A call that drops the last reference of a socket's file may release the
 * socket after sys_exit: the final fput runs as task_work on the way back to
 * user space (close(2) before 6.6; close_range, dup2 over an fd and
 * close-on-exec on every kernel). Such entries stay, marked exited, so that
 * those transitions are still tied to the call; they are matched only for
 * sockets whose file is being released, and replaced by the thread's next
 * correlated syscall.
 *
 * A thread is in at most one syscall, so the map holds one entry per thread;
 * LRU so that a missed deletion can never fill it.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight);
} inflight SEC(".maps");

/*
 * inflight_count: for each bucket of threads (the low bits of their thread
 * id), how many inflight entries they may have. The raw_syscalls sys_exit
 * hook runs for every close and dup on the host, and nearly all of them
 * stored nothing (a file, a pipe, a socket of an untraced port): a thread
 * whose bucket is 0 has no entry, and its sys_exit returns without a map
 * lookup; so does a state change that runs in such a thread. Incremented
 * when an entry is created, decremented after one is deleted, always by the
 * entry's own thread (whose sys_exit and state changes are the only ones
 * that read its count): never 0 while the thread has an entry. An entry
 * the LRU evicts leaves its count behind, which costs lookups but never
 * misses an entry.
 */
#define INFLIGHT_BUCKETS 4096
__u32 inflight_count[INFLIGHT_BUCKETS] = {};

/*
 * owned_socks: socket address -> 1, for the sockets of the --pid process.
 * Inserted when that process's syscall works on a socket, deleted when the
 * socket reaches CLOSE. Used only when cfg.filter_tgid is set. LRU: a socket
 * the process leaked forever must not block new ones.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} owned_socks SEC(".maps");

/*
 * owned_ports: local port -> 1, for the ports the --pid process listens on,
 * so that its incoming connections are traced from their first transition,
 * before accept() hands them to the process. Inserted at CLOSE->LISTEN inside
 * its listen(); never deleted (a handful of ports per process).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u8);
} owned_ports SEC(".maps");

/* Where and when a new connection's LISTEN->SYN_RECV ran. */
struct syn_recv {
	__u64 ts_ns;
	__u64 pid_tgid;
	__u8 flags;
	__u8 _pad[7];
	char comm[16];
};

/*
 * syn_recvs: new child socket -> its LISTEN->SYN_RECV, held back. Kernels
 * that change the state of a clone of the listener before giving it the
 * connection's addresses and cookie (6.12 and older of those tested) would
 * report that first step with the listener's identity and remote 0.0.0.0:0.
 * Inserted at such a LISTEN->SYN_RECV, deleted at the child's next
 * transition, which reports it first with the child's own identity. LRU: a
 * child whose next transition was skipped must not hold a place forever.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct syn_recv);
} syn_recvs SEC(".maps");

/* Set at the first step held back: until then (always, on kernels that
 * give a child its addresses before its first change) no SYN_RECV change
 * looks syn_recvs up. */
__u32 syn_recvs_held = 0;

/*
 * sock_ids: socket address -> identity, only where the kernel gives tracing
 * programs no socket cookie (before 5.12). Inserted at a socket's first
 * traced event (its cookie if sock_diag already made one, otherwise a
 * synthetic id with TT_SYNTHETIC_ID set), deleted when it reaches CLOSE.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sock_ids SEC(".maps");

/*
 * cgroup_filter: cgroup id -> 1, the cgroups whose sockets are traced when
 * cfg.filter_cgroups is set (--cgroup, --container). Filled by the loader
 * before attaching; never changed after.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_filter SEC(".maps");

/* next_id: per CPU, the counter behind synthetic ids. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next_id SEC(".maps");

/*
 * last_rst: per CPU, the socket the kernel last reset on its own
 * (tcp_send_active_reset: a FIN_WAIT2 orphan whose tcp_fin_timeout ran
 * out, an orphan dropped for memory or count, a socket destroyed through
 * sock_diag) and when. Each of those resets is followed at once, on the
 * same CPU, by the socket's move to CLOSE, which reads and clears the slot:
 * that is what tells a socket the kernel killed from one it handed to a
 * timewait socket, since both leave FIN_WAIT2 for CLOSE with no error and
 * no call. Every move to CLOSE reads the slot, traced port or not, so none
 * is left for a later socket at the same address; the next reset
 * overwrites it.
 */
struct last_rst {
	__u64 sk;
	__u64 ts_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_rst);
} last_rst SEC(".maps");

/* How long after its reset a socket's move to CLOSE still counts as caused
 * by it: a guard only. The two are a few instructions apart, but a virtual
 * CPU can be descheduled between them for milliseconds. */
#define RST_TO_CLOSE_NS 1000000000ULL

static __always_inline __u32 *inflight_bucket(__u64 pid_tgid)
{
	return &inflight_count[(__u32)pid_tgid & (INFLIGHT_BUCKETS - 1)];
}

/* Store the thread's inflight entry, counting it if it is new. */
static __always_inline void inflight_store(__u64 pid_tgid, struct inflight *in)
{
	__u32 *count = inflight_bucket(pid_tgid);

	if (!bpf_map_update_elem(&inflight, &pid_tgid, in, BPF_NOEXIST)) {
		__sync_fetch_and_add(count, 1);
		return;
	}
	/* The thread's earlier entry, counted already: replace it. */
	if (!bpf_map_update_elem(&inflight, &pid_tgid, in, BPF_EXIST))
		return;
	/* Evicted in between, or no room: count it before it exists (a count
	 * too many is harmless). */
	__sync_fetch_and_add(count, 1);
	if (bpf_map_update_elem(&inflight, &pid_tgid, in, BPF_ANY))
		__sync_fetch_and_add(&inflight_full, 1);
}

static __always_inline void inflight_delete(__u64 pid_tgid)
{
	if (!bpf_map_delete_elem(&inflight, &pid_tgid))
		__sync_fetch_and_add(inflight_bucket(pid_tgid), -1);
}

static __always_inline bool port_wanted(__u16 port)
{
	return cfg.port_bits[port >> 6] & (1ULL << (port & 63));
}

static __always_inline bool ports_wanted(__u16 sport, __u16 dport)
{
	if (!cfg.filter_ports)
		return true;
	return port_wanted(sport) || port_wanted(dport);
}

static __always_inline bool is_tcp(const struct sock *sk)
{
	__u16 proto = BPF_CORE_READ(sk, sk_protocol);

	return proto == IPPROTO_TCP || proto == IPPROTO_MPTCP;
}

static __always_inline bool owned_by_target(__u64 sk, __u16 sport)
{
	if (bpf_map_lookup_elem(&owned_socks, &sk))
		return true;
	return bpf_map_lookup_elem(&owned_ports, &sport) != NULL;
}

static __always_inline void mark_owned(__u64 sk)
{
	__u8 one = 1;

	bpf_map_update_elem(&owned_socks, &sk, &one, BPF_ANY);
}

/* The current task's flags. Through the BTF-typed helper where the kernel
 * has it (plain loads); otherwise read from the task's address. */
static __always_inline __u32 current_flags(void)
{
	if (cfg.task_btf)
		return bpf_get_current_task_btf()->flags;
	return BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), flags);
}

/* The identity of a socket seen in a transition: its cookie, or where the
 * kernel has no cookie helper for tracing programs, the id sock_ids keeps. */
static __always_inline __u64 sock_id(const struct sock *sk)
{
	__u64 key = (__u64)sk, id, *have, *ctr;
	__u32 zero = 0;

	if (cfg.cookie_helper)
		return bpf_get_socket_cookie((void *)sk);
	have = bpf_map_lookup_elem(&sock_ids, &key);
	if (have)
		return *have;
	id = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!id) {
		ctr = bpf_map_lookup_elem(&next_id, &zero);
		if (!ctr)
			return 0;
		*ctr += 1;
		/* CPU in bits 40-51, that CPU's count below. */
		id = TT_SYNTHETIC_ID | (((__u64)bpf_get_smp_processor_id() & 0xfff) << 40) |
		     (*ctr & ((1ULL << 40) - 1));
	}
	bpf_map_update_elem(&sock_ids, &key, &id, BPF_ANY);
	return id;
}

/* The identity of a socket a call works on, without making one: 0 when the
 * socket has had no traced transition and no cookie yet. */
static __always_inline __u64 known_sock_id(const struct sock *sk)
{
	__u64 key = (__u64)sk, *have;

	if (!cfg.cookie_helper) {
		have = bpf_map_lookup_elem(&sock_ids, &key);
		if (have)
			return *have;
	}
	return BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
}

/* Size of a record in the ring buffer: the event and its 8-byte header. */
#define RECORD_BYTES (sizeof(struct event) + 8)

/*
 * Wake the reader only when this record makes the pending data cross
 * cfg.wakeup_bytes, not for every record past it: a wakeup is an IRQ-work
 * self-interrupt, and the softirqs that run on its way out recurse into
 * this very program and are skipped. The reader also polls on a short
 * deadline, so nothing waits long without a wakeup.
 */
static __always_inline void submit(struct event *e)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	if (avail >= cfg.wakeup_bytes && avail < cfg.wakeup_bytes + RECORD_BYTES)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(e, flags);
}

static __always_inline struct event *reserve(void)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

	if (!e)
		__sync_fetch_and_add(&ringbuf_full, 1);
	return e;
}

static __always_inline void fill_task(struct event *e, __u64 pid_tgid)
{
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->flags = (current_flags() & PF_EXITING) ? TT_FLAG_EXITING : 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/* The inode of sk's network namespace: part of its identity, since
 * namespaces reuse each other's addresses. */
static __always_inline __u32 sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* The cgroup v2 id of sk's creator (the socket keeps it), or 0. */
static __always_inline __u64 sock_cgroup(const struct sock *sk)
{
	struct cgroup *cg;

	if (bpf_core_field_exists(sk->sk_cgrp_data.cgroup)) {
		cg = BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	} else {
		__u64 val = BPF_CORE_READ(sk, sk_cgrp_data.val);

		cg = (val & 1) ? NULL : (struct cgroup *)val;
	}
	if (!cg)
		return 0;
	return BPF_CORE_READ(cg, kn, id);
}

/*
 * The same three, for the socket a tp_btf program is handed: a trusted
 * pointer, whose fields and the kernel objects they point to are read with
 * plain loads instead of a helper call each (five per change of a traced
 * port, a sixth of the program's run time; the port alone for every other
 * change on the host). The local port is inet_sport's copy skc_num, which
 * is already 0 when a socket reaches CLOSE after giving its port up (a
 * hand-over to a timewait socket): then inet_sport, which lies past struct
 * sock, is read the slow way.
 */
static __always_inline __u16 tp_sock_sport(const struct sock *sk)
{
	__u16 num = sk->__sk_common.skc_num;

	if (num)
		return num;
	return bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
}

static __always_inline __u32 tp_sock_netns(const struct sock *sk)
{
	struct net *net = sk->__sk_common.skc_net.net;

	/* The field is __rcu in newer kernels; where their BTF says so, the
	 * verifier takes it for a pointer that may be NULL. */
	if (!net)
		return 0;
	return net->ns.inum;
}

static __always_inline __u64 tp_sock_cgroup(const struct sock *sk)
{
	struct cgroup *cg;

	if (!bpf_core_field_exists(sk->sk_cgrp_data.cgroup))
		return sock_cgroup(sk);
	cg = sk->sk_cgrp_data.cgroup;
	if (!cg)
		return 0;
	return cg->kn->id;
}

/* Whether sk belongs to the namespace and cgroups being traced. */
static __always_inline bool sock_in_scope(const struct sock *sk, __u32 netns, __u64 cgroup)
{
	if (cfg.filter_netns && netns != cfg.filter_netns)
		return false;
	if (cfg.filter_cgroups && !bpf_map_lookup_elem(&cgroup_filter, &cgroup))
		return false;
	return true;
}

/* Addresses, family and ports of sk. The local port comes from inet_sport:
 * skc_num is already 0 when a socket that never called bind() reaches CLOSE. */
static __always_inline void fill_sock(struct event *e, const struct sock *sk)
{
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->protocol = BPF_CORE_READ(sk, sk_protocol);
	e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	e->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->sk_err = BPF_CORE_READ(sk, sk_err);
	e->netns = sock_netns(sk);
	e->cgroup = sock_cgroup(sk);
	if (e->family == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/* Whether file has no references left: it is being released (__fput). */
static __always_inline bool file_released(const struct file *file)
{
	if (bpf_core_field_exists(file->f_ref)) {
		/* FILE_REF_NOREF and FILE_REF_DEAD both read as negative. */
		return (__s64)BPF_CORE_READ(file, f_ref.refcnt.counter) < 0;
	}
	return BPF_CORE_READ(file, f_count.counter) == 0;
}

/* Whether sk changes state because its file is being released right now:
 * the final fput of a close, close_range, dup2 or close-on-exec. */
static __always_inline bool sock_released(const struct sock *sk)
{
	struct socket *sock = BPF_CORE_READ(sk, sk_socket);
	struct file *file;

	if (!sock)
		return false;
	file = BPF_CORE_READ(sock, file);
	return file && file_released(file);
}

/* Whether a transition of sk in this thread was caused by the call in. *fd
 * and *call are set to the call's. */
static __always_inline bool caused_by(struct inflight *in, const struct sock *sk, __s32 *fd,
				      __u8 *call)
{
	__u64 skaddr = (__u64)sk;

	switch (in->call) {
	case TT_CALL_CLOSE_RANGE:
	case TT_CALL_EXECVE:
		/* These close fds tcptrail does not walk: any socket whose file
		 * they release is theirs. */
		if (!sock_released(sk))
			return false;
		*fd = in->call == TT_CALL_CLOSE_RANGE ? in->fd : -1;
		*call = in->call;
		return true;
	}
	if (in->victim_sk && in->victim_sk == skaddr) {
		if (in->exited && !sock_released(sk))
			return false;
		*fd = in->victim_fd;
		*call = TT_CALL_DUP_OVER;
		return true;
	}
	/* Softirq work for other sockets also runs while a syscall is in
	 * progress, so the call being open is not enough: the socket must
	 * match. An MPTCP fd changes state through its TCP subflow, a
	 * different sock, so for those the call alone has to do. */
	if (in->sk != skaddr && !in->mptcp)
		return false;
	if (in->exited && !sock_released(sk))
		return false;
	*fd = in->fd;
	*call = in->call;
	return true;
}

/* Report a LISTEN->SYN_RECV that was held back, now that the child has its
 * own addresses and cookie. */
static __always_inline void report_syn_recv(const struct sock *sk, struct syn_recv *sr, __u64 id)
{
	struct event *e = reserve();

	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = sr->ts_ns;
	e->pid = sr->pid_tgid >> 32;
	e->tid = (__u32)sr->pid_tgid;
	e->flags = sr->flags;
	__builtin_memcpy(e->comm, sr->comm, sizeof(e->comm));
	fill_sock(e, sk);
	e->kind = TT_EVENT_STATE;
	e->cookie = id;
	e->oldstate = TCP_LISTEN;
	e->newstate = TCP_SYN_RECV;
	e->fd = -1;
	submit(e);
}

/* Whether the kernel has just reset sk on its own (see last_rst). */
static __always_inline bool reset_by_kernel(__u64 skaddr)
{
	__u32 zero = 0;
	struct last_rst *r = bpf_map_lookup_elem(&last_rst, &zero);

	if (!r || r->sk != skaddr)
		return false;
	r->sk = 0;
	return bpf_ktime_get_ns() - r->ts_ns <= RST_TO_CLOSE_NS;
}

/* A reset the kernel sends of its own accord (tcp_send_active_reset) comes
 * with no packet; one answering a packet (tcp_v4/v6_send_reset) comes with
 * that packet, and the socket, if any, lives on or is closed elsewhere. A
 * socket already in CLOSE has had its transition: close() with unread data
 * and SO_LINGER 0 reset after it. Newer kernels pass a reason too. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(handle_send_reset, const struct sock *sk, const void *skb)
{
	__u32 zero = 0;
	struct last_rst *r;

	if (!sk || skb || sk->__sk_common.skc_state == TCP_CLOSE)
		return 0;
	r = bpf_map_lookup_elem(&last_rst, &zero);
	if (!r)
		return 0;
	r->sk = (__u64)sk;
	r->ts_ns = bpf_ktime_get_ns();
	return 0;
}

/* A state change of sk: filtered, tied to its call, reported. */
static __always_inline int on_set_state(const struct sock *sk, int oldstate, int newstate)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 proto = sk->sk_protocol;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 skaddr = (__u64)sk;
	struct inflight *in;
	struct syn_recv *sr;
	struct event *e;
	__u16 sport, dport;
	__u8 call = 0;
	__s32 fd = -1;
	__u64 id, cgroup;
	__u32 netns;
	bool rst_sent = newstate == TCP_CLOSE && reset_by_kernel(skaddr);

	if (family != AF_INET && family != AF_INET6)
		return 0;
	/* MPTCP sockets change state through their TCP subflows, which are
	 * what ss and the peer see; the MPTCP-level socket's own updates would
	 * only duplicate them. */
	if (proto != IPPROTO_TCP)
		return 0;

	sport = tp_sock_sport(sk);
	dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (!ports_wanted(sport, dport))
		return 0;
	netns = tp_sock_netns(sk);
	cgroup = tp_sock_cgroup(sk);
	if (!sock_in_scope(sk, netns, cgroup))
		return 0;

	/* A new child that still carries its listener's addresses and cookie:
	 * hold the step back until the child is itself. Where the kernel
	 * changes the state after giving it its addresses, dport is set. */
	if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV && dport == 0) {
		struct syn_recv held = {};

		held.ts_ns = bpf_ktime_get_ns();
		held.pid_tgid = pid_tgid;
		held.flags = (current_flags() & PF_EXITING) ? TT_FLAG_EXITING : 0;
		bpf_get_current_comm(held.comm, sizeof(held.comm));
		bpf_map_update_elem(&syn_recvs, &skaddr, &held, BPF_ANY);
		if (!syn_recvs_held) /* not a store to a shared line per child */
			syn_recvs_held = 1;
		return 0;
	}

	/* A change outside any call of its thread (softirq work on an idle
	 * CPU or in ksoftirqd, a thread between calls) needs no lookup: one
	 * load tells, as at sys_exit. */
	in = *inflight_bucket(pid_tgid) ? bpf_map_lookup_elem(&inflight, &pid_tgid) : NULL;
	if (in && caused_by(in, sk, &fd, &call))
		in->changed = 1;

	if (cfg.filter_tgid) {
		bool mine = (pid_tgid >> 32) == cfg.filter_tgid && call;

		if (mine) {
			mark_owned(skaddr);
			if (newstate == TCP_LISTEN) {
				__u8 one = 1;

				bpf_map_update_elem(&owned_ports, &sport, &one, BPF_ANY);
			}
		} else if (!owned_by_target(skaddr, sport)) {
			return 0;
		}
		if (newstate == TCP_CLOSE)
			bpf_map_delete_elem(&owned_socks, &skaddr);
	}

	id = sock_id(sk);
	if (oldstate == TCP_SYN_RECV && syn_recvs_held) {
		sr = bpf_map_lookup_elem(&syn_recvs, &skaddr);
		if (sr) {
			report_syn_recv(sk, sr, id);
			bpf_map_delete_elem(&syn_recvs, &skaddr);
		}
	}

	e = reserve();
	if (!e)
		goto out;
	fill_task(e, pid_tgid);
	/* sk is a trusted tracepoint argument: plain loads, no helper calls. */
	e->family = family;
	e->protocol = proto;
	e->sport = sport;
	e->dport = dport;
	e->sk_err = sk->sk_err;
	e->netns = netns;
	e->cgroup = cgroup;
	if (family == AF_INET) {
		*(__u32 *)e->saddr = sk->__sk_common.skc_rcv_saddr;
		*(__u32 *)e->daddr = sk->__sk_common.skc_daddr;
	} else {
		__builtin_memcpy(e->saddr, &sk->__sk_common.skc_v6_rcv_saddr, 16);
		__builtin_memcpy(e->daddr, &sk->__sk_common.skc_v6_daddr, 16);
	}
	/* Whether the peer's FIN had arrived (tcp_fin() sets SOCK_DONE; not
	 * RCV_SHUTDOWN, which close() sets too): at a hand-over to a timewait
	 * socket this says which phase it starts in, TIME_WAIT or FIN_WAIT2. */
	if (sk->__sk_common.skc_flags & (1UL << SOCK_DONE))
		e->flags |= TT_FLAG_PEER_FIN;
	if (call && in && in->exited)
		e->flags |= TT_FLAG_AFTER_CALL;
	if (rst_sent)
		e->flags |= TT_FLAG_RST_SENT;
	e->kind = TT_EVENT_STATE;
	e->cookie = id;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->call = call;
	e->fd = fd;
	e->ret = 0;
	e->arg = in && call ? in->arg : 0;
	submit(e);
out:
	if (!cfg.cookie_helper && newstate == TCP_CLOSE)
		bpf_map_delete_elem(&sock_ids, &skaddr);
	return 0;
}

/*
 * The kernel runs a tracing program at most once at a time per CPU: a state
 * change in a softirq that interrupts handle_set_state on its CPU (a packet
 * arriving while the program runs in a task) is skipped and only counted,
 * and at a busy host's rates that is tens of transitions a second. A second
 * program on the same tracepoint, handle_set_state_missed, runs after the
 * first for every change and reports those the first did not.
 *
 * To tell them, handle_set_state notes each change it handled, when it is
 * done, in a small per-CPU ring; the second program looks for its change
 * among the latest notes and strikes it out, or finds none and handles the
 * change itself. Notes never move: changes nested between or inside the two
 * programs' runs (a burst of softirq work can be long on a busy virtual
 * CPU) write newer slots, and only more of them than the ring holds could
 * overwrite a note before it is read. A kernel that runs a nested program
 * instead of skipping it leaves the second program nothing to do. What
 * neither program handled is counted: the first program's skips less the
 * second program's recoveries.
 */
/* A power of two. 16 was overrun once in about three million changes under
 * a one-process loopback load: a softirq of more than 16 nested changes
 * (126 us) between the two programs' runs of one change, which was then
 * reported twice. The full search only runs for a change the first program
 * skipped; otherwise the newest note matches. */
#define HANDLED_SLOTS 64

struct handled {
	__u64 sk; /* 0: struck out */
	__u32 states; /* oldstate << 8 | newstate */
	__u32 _pad;
};

struct handled_ring {
	struct handled e[HANDLED_SLOTS];
	__u64 seq; /* notes written so far */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct handled_ring);
} handled SEC(".maps");

__u64 set_state_recovered = 0; /* changes handle_set_state skipped and handle_set_state_missed reported */

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state, const struct sock *sk, int oldstate, int newstate)
{
	struct handled_ring *h;
	__u32 zero = 0;
	__u64 slot;

	on_set_state(sk, oldstate, newstate);
	h = bpf_map_lookup_elem(&handled, &zero);
	if (!h)
		return 0;
	/* The slot is taken before it is written, and the socket written
	 * last: a change nested in between takes the next slot, or (nested
	 * between the read and the write of seq) the same one, whose note its
	 * second program strikes out before this one is written. A plain
	 * read and write: an atomic fetch needs Linux 5.12. */
	slot = h->seq;
	h->seq = slot + 1;
	slot &= HANDLED_SLOTS - 1;
	__asm__ __volatile__("" ::: "memory");
	h->e[slot].states = (__u32)oldstate << 8 | (__u32)newstate;
	__asm__ __volatile__("" ::: "memory");
	h->e[slot].sk = (__u64)sk;
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(handle_set_state_missed, const struct sock *sk, int oldstate, int newstate)
{
	__u32 states = (__u32)oldstate << 8 | (__u32)newstate;
	struct handled_ring *h;
	__u32 zero = 0;
	__u64 seq;

	h = bpf_map_lookup_elem(&handled, &zero);
	if (!h)
		return 0;
	/* Newest first: this change's note, if the first program left one, is
	 * among the latest. */
	seq = h->seq;
	for (int k = 1; k <= HANDLED_SLOTS; k++) {
		struct handled *n = &h->e[(seq - k) & (HANDLED_SLOTS - 1)];

		if (n->sk == (__u64)sk && n->states == states) {
			n->sk = 0;
			return 0;
		}
	}
	__sync_fetch_and_add(&set_state_recovered, 1);
	return on_set_state(sk, oldstate, newstate);
}

/* Whether more than one reference holds file: another fd (dup) or another
 * process (fork) shares it, so closing this fd leaves the socket alive. */
static __always_inline bool file_shared(struct file *file)
{
	if (bpf_core_field_exists(file->f_ref)) {
		__s64 refs = BPF_CORE_READ(file, f_ref.refcnt.counter);

		/* 0 is one reference; values with the top bits set mean dead. */
		return refs > 0 && refs < 0x4000000000000000LL;
	}
	return BPF_CORE_READ(file, f_count.counter) > 1;
}

/* The struct sock behind fd in the current task, or NULL when fd is not a
 * TCP socket. Follows task->files->fdt->fd[fd]->file->private_data->sk.
 * *shared tells whether the file has other references. */
static __always_inline struct sock *fd_to_tcp_sock(int fd, bool *shared)
{
	struct fdtable *fdt;
	struct file **fds;
	struct file *file;
	struct socket *sock;
	struct sock *sk;
	__u64 fops;
	__u16 mode;

	/* This runs for every close and dup on the host, which are nearly all
	 * of files that are not sockets: as few helper calls as it takes to
	 * tell. The task and its fd table are trusted pointers where the
	 * kernel has bpf_get_current_task_btf(): plain loads. */
	if (fd < 0)
		return NULL;
	if (cfg.task_btf) {
		fdt = bpf_get_current_task_btf()->files->fdt;
		if (!fdt || (unsigned int)fd >= fdt->max_fds)
			return NULL;
		fds = fdt->fd;
	} else {
		fdt = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), files, fdt);
		if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
			return NULL;
		fds = BPF_CORE_READ(fdt, fd);
	}
	if (bpf_core_read(&file, sizeof(file), &fds[fd]) || !file)
		return NULL;
	/* A socket's file has the sockets' file operations, which is how the
	 * kernel itself tells (sock_from_file). Until they are known, the
	 * inode's type tells, one read further. */
	fops = socket_fops;
	if (fops) {
		if ((__u64)BPF_CORE_READ(file, f_op) != fops)
			return NULL;
	} else {
		mode = BPF_CORE_READ(file, f_inode, i_mode);
		if ((mode & S_IFMT) != S_IFSOCK)
			return NULL;
	}
	sock = BPF_CORE_READ(file, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return NULL;
	if (!fops && BPF_CORE_READ(sock, file) == file)
		socket_fops = (__u64)BPF_CORE_READ(file, f_op);
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || !is_tcp(sk))
		return NULL;
	*shared = file_shared(file);
	return sk;
}

static __always_inline __u8 call_of(long nr)
{
	switch (nr) {
	case NR_connect: return TT_CALL_CONNECT;
	case NR_accept:
	case NR_accept4: return TT_CALL_ACCEPT;
	case NR_bind: return TT_CALL_BIND;
	case NR_listen: return TT_CALL_LISTEN;
	case NR_close: return TT_CALL_CLOSE;
	case NR_shutdown: return TT_CALL_SHUTDOWN;
	case NR_dup:
	case NR_dup2:
	case NR_dup3: return TT_CALL_DUP;
	case NR_close_range: return TT_CALL_CLOSE_RANGE;
	case NR_execve:
	case NR_execveat: return TT_CALL_EXECVE;
	}
	return 0;
}

/* Port of a user sockaddr_in/sockaddr_in6 (both keep it at offset 2). */
static __always_inline __u16 user_sockaddr_port(__u64 uaddr)
{
	__be16 port = 0;

	bpf_probe_read_user(&port, sizeof(port), (void *)(uaddr + 2));
	return bpf_ntohs(port);
}

/* Whether a call on sk concerns a traced port. */
static __always_inline bool sock_wanted(const struct sock *sk)
{
	__u16 sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	__u16 dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

	return ports_wanted(sport, dport);
}

/* dup2/dup3 onto an fd that holds a traced TCP socket closes that socket. */
static __always_inline void note_victim(struct inflight *in, int newfd)
{
	bool shared = false;
	struct sock *victim;

	if (newfd == in->fd)
		return;
	victim = fd_to_tcp_sock(newfd, &shared);
	if (!victim || shared || !sock_wanted(victim))
		return;
	in->victim_sk = (__u64)victim;
	in->victim_fd = newfd;
}

/* Entry of syscall id with its first two arguments. */
static __always_inline int on_sys_enter(long id, __u64 arg1, __u64 arg2)
{
	struct inflight in = {};
	struct sock *sk = NULL;
	__u64 pid_tgid;
	__u8 call;

	/* This runs for every syscall on the host: the id test comes first. */
	call = call_of(id);
	if (!call)
		return 0;

	in.call = call;
	in.fd = (int)arg1;
	if (cfg.filter_tgid && call != TT_CALL_CLOSE && call != TT_CALL_SHUTDOWN &&
	    call != TT_CALL_CLOSE_RANGE && call != TT_CALL_EXECVE && call != TT_CALL_DUP &&
	    (bpf_get_current_pid_tgid() >> 32) != cfg.filter_tgid)
		return 0;

	switch (call) {
	case TT_CALL_CLOSE_RANGE:
		/* The fds it closes are not walked: the transitions of the
		 * sockets it releases are recognised as they come. */
		in.arg = (__u32)arg2;
		goto keep;
	case TT_CALL_EXECVE:
		in.fd = -1;
		goto keep;
	case TT_CALL_ACCEPT:
		/* An accept's socket is only known at exit. */
		goto keep;
	}

	{
		bool shared = false;

		sk = fd_to_tcp_sock(in.fd, &shared);
		if (call == TT_CALL_DUP && id != NR_dup)
			note_victim(&in, (int)arg2);
		if (!sk && !in.victim_sk)
			return 0;
		if (sk) {
			in.shared = shared;
			in.sk = (__u64)sk;
			in.mptcp = BPF_CORE_READ(sk, sk_protocol) == IPPROTO_MPTCP;
			in.state = BPF_CORE_READ(sk, __sk_common.skc_state);
		}
	}
	if (call == TT_CALL_BIND || call == TT_CALL_CONNECT)
		in.uaddr = arg2;

	/* Close, shutdown, listen and dup of an untraced socket cost nothing
	 * more; neither does a connect to an untraced port. A bind is kept
	 * whatever its port: a failed one is explained if a traced socket
	 * holds the address. */
	if (cfg.filter_ports && sk && call != TT_CALL_BIND) {
		__u16 sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		__u16 dport = call == TT_CALL_CONNECT ? user_sockaddr_port(in.uaddr) :
			      bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));

		if (!ports_wanted(sport, dport)) {
			if (!in.victim_sk)
				return 0;
			in.sk = 0;
		}
	}
	if (call == TT_CALL_SHUTDOWN)
		in.arg = (__u32)arg2;

keep:
	pid_tgid = bpf_get_current_pid_tgid();
	inflight_store(pid_tgid, &in);
	return 0;
}

/* Report a syscall that matters but changed no state by itself. */
static __always_inline void emit_call(struct inflight *in, struct sock *sk, __s32 fd,
				      long ret, __u64 pid_tgid)
{
	struct event *e;
	__u16 sport, dport;

	if (sk) {
		sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
		dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
		/* A failed bind/connect names its port only in the sockaddr. */
		if (in->uaddr && ret < 0) {
			__u16 want = user_sockaddr_port(in->uaddr);

			if (in->call == TT_CALL_BIND)
				sport = want;
			else
				dport = want;
		}
		/* An address already in use is reported whatever its port: the
		 * holder may be a traced socket (a client's fixed local port is
		 * often not among the traced ones). User space drops the rest. */
		if (!ports_wanted(sport, dport) && ret != -98 && ret != -99)
			return;
		if (!sock_in_scope(sk, sock_netns(sk), sock_cgroup(sk)))
			return;
		if (cfg.filter_tgid) {
			if ((pid_tgid >> 32) == cfg.filter_tgid)
				mark_owned((__u64)sk);
			else if (!owned_by_target((__u64)sk, sport))
				return;
		}
	}

	e = reserve();
	if (!e)
		return;
	fill_task(e, pid_tgid);
	e->kind = TT_EVENT_CALL;
	e->call = in->call;
	e->fd = fd;
	e->ret = ret;
	e->arg = in->arg;
	e->oldstate = 0;
	e->newstate = 0;
	e->cookie = 0;
	e->family = 0;
	if (sk) {
		fill_sock(e, sk);
		e->cookie = known_sock_id(sk);
		/* Entry and exit states: a close that changed the state while
		 * no transition was seen lost its transitions (skipped by the
		 * kernel), it did not "change nothing". */
		e->oldstate = in->state ? in->state : BPF_CORE_READ(sk, __sk_common.skc_state);
		e->newstate = BPF_CORE_READ(sk, __sk_common.skc_state);
		if (in->uaddr && ret < 0) {
			/* The address the failed call asked for, as the user gave it. */
			__u16 fam = 0;

			bpf_probe_read_user(&fam, sizeof(fam), (void *)in->uaddr);
			if (fam == AF_INET || fam == AF_INET6) {
				__u8 *dst = in->call == TT_CALL_BIND ? e->saddr : e->daddr;

				__builtin_memset(dst, 0, 16);
				if (fam == AF_INET)
					bpf_probe_read_user(dst, 4, (void *)(in->uaddr + 4));
				else
					bpf_probe_read_user(dst, 16, (void *)(in->uaddr + 8));
				if (in->call == TT_CALL_BIND)
					e->sport = user_sockaddr_port(in->uaddr);
				else
					e->dport = user_sockaddr_port(in->uaddr);
				e->family = fam;
			}
		}
	}
	submit(e);
}

/* Exit of syscall id with its return value. */
static __always_inline int on_sys_exit(long id, long ret)
{
	__u64 pid_tgid;
	struct inflight *in;
	struct sock *sk;

	if (!call_of(id))
		return 0;
	pid_tgid = bpf_get_current_pid_tgid();
	if (!*inflight_bucket(pid_tgid))
		return 0;
	in = bpf_map_lookup_elem(&inflight, &pid_tgid);
	if (!in)
		return 0;
	/* Left by an earlier call: this thread has been back in user space
	 * since, so that call's releases are over. */
	if (in->exited)
		goto done;

	switch (in->call) {
	case TT_CALL_ACCEPT:
		/* The new fd is the owner's handle on the accepted socket. */
		if (ret >= 0) {
			bool shared;

			sk = fd_to_tcp_sock(ret, &shared);
			if (sk)
				emit_call(in, sk, ret, 0, pid_tgid);
		}
		break;
	case TT_CALL_DUP:
		/* A second fd on the same socket: one more handle to close. */
		if (ret >= 0 && in->sk) {
			in->arg = in->fd;
			emit_call(in, (struct sock *)in->sk, ret, 0, pid_tgid);
		}
		/* The socket that was on the new fd is released after this. */
		if (ret >= 0 && in->victim_sk)
			goto keep;
		break;
	case TT_CALL_CLOSE:
		/* A close that changed nothing because another fd or process
		 * still holds the socket. Decided by the file's references at
		 * entry, not by the absence of a transition: the last close of
		 * a socket already in CLOSE changes nothing visible and frees
		 * it, and its sock must not be read here. */
		if (in->shared && !in->changed && ret == 0)
			emit_call(in, (struct sock *)in->sk, in->fd, ret, pid_tgid);
		/* The last reference, not yet released: the kernel releases
		 * it on the way back to user space. */
		if (!in->shared && !in->changed && ret == 0)
			goto keep;
		break;
	case TT_CALL_CLOSE_RANGE:
	case TT_CALL_EXECVE:
		if (ret == 0)
			goto keep;
		break;
	case TT_CALL_SHUTDOWN:
		/* The fd is still open: the sock is alive. */
		if (!in->changed && ret == 0)
			emit_call(in, (struct sock *)in->sk, in->fd, ret, pid_tgid);
		break;
	case TT_CALL_BIND:
	case TT_CALL_CONNECT:
	case TT_CALL_LISTEN:
		/* Successful connects and listens show up as their transition;
		 * bind has none, so report it: it makes the process an owner. */
		if (ret < 0 || in->call == TT_CALL_BIND) {
			/* EINPROGRESS is how a non-blocking connect succeeds. */
			if (!(in->call == TT_CALL_CONNECT && ret == -115))
				emit_call(in, (struct sock *)in->sk, in->fd, ret, pid_tgid);
		}
		break;
	}
done:
	inflight_delete(pid_tgid);
	return 0;
keep:
	in->exited = 1;
	return 0;
}

/*
 * The syscall hooks, in three variants. The raw_syscalls tracepoints run for
 * every syscall of every process on the host, which all pay for it; hooks
 * on the functions behind the syscalls (fentry/fexit) run only for the calls
 * tcptrail needs. The loader picks the second where the kernel allows it
 * and points each fentry/fexit pair at its function (the "syscall" in their
 * section names is a placeholder it replaces): the architecture's syscall
 * wrapper, which takes the user's registers, or for the socket calls the
 * __sys_* function behind it, which takes the arguments themselves (kernel
 * BTF often lacks the socket calls' wrappers).
 */
SEC("tp_btf/sys_enter")
int BPF_PROG(handle_sys_enter, struct pt_regs *regs, long id)
{
	/* This runs for every syscall on the host: the id test comes first,
	 * before the registers are read. */
	if (!call_of(id))
		return 0;
	/* regs is a trusted tp_btf argument: plain loads. */
	return on_sys_enter(id, SYSCALL_ARG1(regs), SYSCALL_ARG2(regs));
}

SEC("tp_btf/sys_exit")
int BPF_PROG(handle_sys_exit, struct pt_regs *regs, long ret)
{
	return on_sys_exit(SYSCALL_NR(regs), ret);
}

/*
 * The third variant: the kernel's tracepoints for single syscalls
 * (syscalls:sys_enter_close, ...), one pair per syscall tcptrail needs, the
 * same two programs on each. Syscalls that are not hooked still take the
 * traced entry and exit path, but there the kernel tests a bit and returns:
 * no BPF program runs for them. The loader takes it where the kernel cannot
 * hook functions and tracefs names the events.
 *
 * The record a syscall tracepoint hands its BPF programs: the number at
 * offset 8 and the arguments (or the return value) from 16, on every kernel
 * (before 5.16 a pointer to the registers stands where newer kernels put the
 * common fields, and the number is a long whose low half is read here).
 */
struct syscall_enter_args {
	__u64 common;
	int nr;
	int pad;
	unsigned long args[6];
};

struct syscall_exit_args {
	__u64 common;
	int nr;
	int pad;
	long ret;
};

SEC("tracepoint/syscalls/sys_enter")
int handle_syscall_enter(struct syscall_enter_args *ctx)
{
	return on_sys_enter(ctx->nr, ctx->args[0], ctx->args[1]);
}

/* close(fd) and dup(fd) take one argument, and the kernel refuses a
 * program that may read past a syscall's record: theirs reads the fd alone. */
SEC("tracepoint/syscalls/sys_enter")
int handle_syscall_enter_fd(struct syscall_enter_args *ctx)
{
	return on_sys_enter(ctx->nr, ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_exit")
int handle_syscall_exit(struct syscall_exit_args *ctx)
{
	return on_sys_exit(ctx->nr, ctx->ret);
}

/* Hooks on a syscall wrapper: name(const struct pt_regs *regs). */
#define WRAPPER_HOOKS(name)                                                  \
	SEC("fentry/syscall")                                                \
	int BPF_PROG(enter_##name, struct pt_regs *regs)                     \
	{                                                                    \
		return on_sys_enter(NR_##name, SYSCALL_ARG1(regs),           \
				    SYSCALL_ARG2(regs));                     \
	}                                                                    \
	SEC("fexit/syscall")                                                 \
	int BPF_PROG(exit_##name, struct pt_regs *regs, long ret)            \
	{                                                                    \
		return on_sys_exit(NR_##name, ret);                          \
	}

WRAPPER_HOOKS(close)
WRAPPER_HOOKS(close_range)
WRAPPER_HOOKS(connect)
WRAPPER_HOOKS(accept)
WRAPPER_HOOKS(accept4)
WRAPPER_HOOKS(bind)
WRAPPER_HOOKS(listen)
WRAPPER_HOOKS(shutdown)
WRAPPER_HOOKS(dup)
WRAPPER_HOOKS(dup2) /* not on arm64: the loader leaves it out there */
WRAPPER_HOOKS(dup3)
WRAPPER_HOOKS(execve)
WRAPPER_HOOKS(execveat)

/* Hooks on the functions behind the socket syscalls, which take the
 * arguments themselves; fexit sees them all, then the return value. */
SEC("fentry/syscall")
int BPF_PROG(enter_sys_connect, int fd, void *uaddr)
{
	return on_sys_enter(NR_connect, fd, (__u64)uaddr);
}

SEC("fexit/syscall")
int BPF_PROG(exit_sys_connect, int fd, void *uaddr, int addrlen, int ret)
{
	return on_sys_exit(NR_connect, ret);
}

SEC("fentry/syscall")
int BPF_PROG(enter_sys_bind, int fd, void *uaddr)
{
	return on_sys_enter(NR_bind, fd, (__u64)uaddr);
}

SEC("fexit/syscall")
int BPF_PROG(exit_sys_bind, int fd, void *uaddr, int addrlen, int ret)
{
	return on_sys_exit(NR_bind, ret);
}

SEC("fentry/syscall")
int BPF_PROG(enter_sys_listen, int fd, int backlog)
{
	return on_sys_enter(NR_listen, fd, backlog);
}

SEC("fexit/syscall")
int BPF_PROG(exit_sys_listen, int fd, int backlog, int ret)
{
	return on_sys_exit(NR_listen, ret);
}

SEC("fentry/syscall")
int BPF_PROG(enter_sys_shutdown, int fd, int how)
{
	return on_sys_enter(NR_shutdown, fd, how);
}

SEC("fexit/syscall")
int BPF_PROG(exit_sys_shutdown, int fd, int how, int ret)
{
	return on_sys_exit(NR_shutdown, ret);
}

/* accept and accept4 both come here. */
SEC("fentry/syscall")
int BPF_PROG(enter_sys_accept4, int fd)
{
	return on_sys_enter(NR_accept4, fd, 0);
}

SEC("fexit/syscall")
int BPF_PROG(exit_sys_accept4, int fd, void *addr, void *addrlen, int flags, int ret)
{
	return on_sys_exit(NR_accept4, ret);
}

/* A thread other than the leader that executes a program becomes the
 * leader (de_thread): its pid_tgid changes in the middle of execve. Move its
 * call there, so that the close-on-exec releases after the call find it. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *p, int old_pid)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 old = (pid_tgid & ~0xffffffffULL) | (__u32)old_pid;
	struct inflight *in;

	if (old == pid_tgid)
		return 0;
	in = bpf_map_lookup_elem(&inflight, &old);
	if (!in)
		return 0;
	inflight_store(pid_tgid, in);
	inflight_delete(old);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct event *e;

	/* A thread that dies inside a syscall never reaches sys_exit. */
	inflight_delete(pid_tgid);

	/* One record per process, when its last thread exits: its fds are
	 * closed right after this, and those closes run with no close() call.
	 * The group is dead once no live thread is left (only newer kernels
	 * pass that as the tracepoint's second argument). */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	if (cfg.filter_tgid && (pid_tgid >> 32) != cfg.filter_tgid)
		return 0;
	e = reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	fill_task(e, pid_tgid);
	e->cgroup = bpf_get_current_cgroup_id();
	e->kind = TT_EVENT_EXIT;
	e->fd = -1;
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	struct event *e;

	/* Threads share the fd table: only a new process can become a new owner
	 * of the parent's sockets. */
	if (child->files == parent->files)
		return 0;
	if (cfg.filter_tgid && parent->tgid != cfg.filter_tgid)
		return 0;
	e = reserve();
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	fill_task(e, bpf_get_current_pid_tgid());
	e->cgroup = bpf_get_current_cgroup_id();
	e->kind = TT_EVENT_FORK;
	e->arg = child->tgid;
	e->fd = -1;
	submit(e);
	return 0;
}
