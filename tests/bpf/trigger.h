/* Records of the binding's test object: one per syscall the test fires. */
#ifndef MEMWATCHER_TRIGGER_H
#define MEMWATCHER_TRIGGER_H

/* getpgid(TRIGGER_MAGIC << 16 | n) from the test process is recorded. */
#define TRIGGER_MAGIC 0x4d57

struct trigger_event {
	__u64 ts_ns;
	__u64 arg;
	__u64 seq;
	__s64 syscall_nr;
	__u32 pid;
	__u32 tid;
	__u32 cpu;
	__u32 pad;
	char comm[16];
};

#endif
