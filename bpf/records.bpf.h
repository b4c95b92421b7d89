/* SPDX-License-Identifier: GPL-2.0 */
/* Helpers for record structs shared with Python (bpf/<report>.h). */
#ifndef MEMWATCHER_RECORDS_BPF_H
#define MEMWATCHER_RECORDS_BPF_H

/* clang emits BTF only for types reachable from globals, maps and function
 * signatures; a record that only travels through a ring buffer would be
 * missing, and the layout test (tests/test_records.py) compares every
 * record of bpf/<report>.h with the object's BTF. This unused global keeps
 * the type in. */
#define EXPORT_RECORD(type) struct type *__record_##type __attribute__((unused))

#endif
