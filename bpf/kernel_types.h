/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types tcptrail reads, declared with only the fields it uses.
 *
 * Every struct carries preserve_access_index, so clang records each field
 * access as a CO-RE relocation and the loader rewrites the offsets against
 * the running kernel's BTF. Layouts here therefore need not match any kernel:
 * only the field names (and, for nested anonymous members, the names inside
 * them) must exist in the target kernel.
 */
#ifndef TCPTRAIL_KERNEL_TYPES_H
#define TCPTRAIL_KERNEL_TYPES_H

typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

/* A socket's cgroup: a pointer since 5.15; before, a union whose val is the
 * pointer when its lowest bit is clear. */
struct sock_cgroup_data {
	struct cgroup *cgroup;
	__u64 val;
};

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
	unsigned long skc_flags;
	possible_net_t skc_net;
};

struct socket;

struct sock {
	struct sock_common __sk_common;
	struct sock_cgroup_data sk_cgrp_data;
	struct socket *sk_socket;
	int sk_err;
	__u16 sk_protocol;
	__u16 sk_type;
};

struct inet_sock {
	struct sock sk;
	__be16 inet_sport;
};

struct file;

struct socket {
	short type;
	struct sock *sk;
	struct file *file;
};

struct inode {
	unsigned short i_mode;
};

/* A file's reference count: file_ref_t (f_ref) since 6.13, where 0 means
 * one reference; a plain counter (f_count) before. */
typedef struct {
	atomic64_t refcnt;
} file_ref_t;

struct file_operations;

struct file {
	const struct file_operations *f_op;
	struct inode *f_inode;
	void *private_data;
	file_ref_t f_ref;
	atomic64_t f_count;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

/* The registers a syscall entered with. arm64 keeps regs[] inside an
 * anonymous union; CO-RE finds the field through it. */
#if defined(__TARGET_ARCH_x86)
struct pt_regs {
	unsigned long si;
	unsigned long di;
	unsigned long dx;
	unsigned long orig_ax;
};
#elif defined(__TARGET_ARCH_arm64)
struct pt_regs {
	__u64 regs[31];
	__u64 orig_x0;
	__s32 syscallno;
};
#else
#error "tcptrail's BPF programs are built for x86 (amd64) and arm64"
#endif

typedef struct {
	int counter;
} atomic_t;

struct signal_struct {
	atomic_t live; /* threads not yet exited: 0 once the group is dead */
};

struct task_struct {
	unsigned int flags;
	int pid;
	int tgid;
	struct files_struct *files;
	struct signal_struct *signal;
	struct task_struct *group_leader;
	char comm[16];
};

#pragma clang attribute pop

#endif
