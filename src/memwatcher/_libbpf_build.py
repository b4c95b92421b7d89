"""cffi (API mode) build script for memwatcher's libbpf binding.

Only the declarations memwatcher uses are listed; the compiler checks them
against the system's libbpf headers. Besides libbpf itself, the extension
carries three small C helpers whose job is to keep per-record work out of
Python (see DESIGN.md for the measured numbers):

* a libbpf print callback that collects log lines in a C buffer, so that a
  failed load can raise an exception carrying the verifier log;
* ring buffer sample callbacks that copy fixed-size records into a
  caller-owned buffer (decoded later in bulk with numpy), or only count them;
* a per-key map dump loop for kernels without BPF_MAP_LOOKUP_BATCH;
* the bpf(2) system call itself, for link types newer than libbpf 1.1
  (uprobe_multi), whose attributes the binding lays out from kernel BTF.
"""

from cffi import FFI

CDEF = r"""
typedef int... pid_t;
enum bpf_prog_type {
    BPF_PROG_TYPE_UNSPEC, BPF_PROG_TYPE_KPROBE, BPF_PROG_TYPE_TRACING,
    BPF_PROG_TYPE_RAW_TRACEPOINT, BPF_PROG_TYPE_TRACEPOINT, ...
};
enum bpf_map_type {
    BPF_MAP_TYPE_UNSPEC, BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_STACK_TRACE, BPF_MAP_TYPE_PERCPU_HASH,
    BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH, ...
};

struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;
struct btf;
struct ring_buffer;

struct btf_type {
    uint32_t name_off;
    uint32_t info;
    union { uint32_t size; uint32_t type; };
};
struct btf_member { uint32_t name_off; uint32_t type; uint32_t offset; };
struct btf_enum { uint32_t name_off; int32_t val; };
struct btf_param { uint32_t name_off; uint32_t type; };
struct btf_var_secinfo { uint32_t type; uint32_t offset; uint32_t size; };
struct btf_array { uint32_t type; uint32_t index_type; uint32_t nelems; };

#define BTF_KIND_INT ...
#define BTF_KIND_PTR ...
#define BTF_KIND_ARRAY ...
#define BTF_KIND_STRUCT ...
#define BTF_KIND_UNION ...
#define BTF_KIND_ENUM ...
#define BTF_KIND_FWD ...
#define BTF_KIND_TYPEDEF ...
#define BTF_KIND_VOLATILE ...
#define BTF_KIND_CONST ...
#define BTF_KIND_RESTRICT ...
#define BTF_KIND_FUNC ...
#define BTF_KIND_FUNC_PROTO ...
#define BTF_KIND_VAR ...
#define BTF_KIND_DATASEC ...
#define BTF_KIND_ENUM64 ...
#define BTF_INT_SIGNED ...

struct bpf_object_open_opts { size_t sz; const char *object_name; const char *btf_custom_path; ...; };
struct bpf_uprobe_opts {
    size_t sz;
    uint64_t bpf_cookie;
    bool retprobe;
    const char *func_name;
    ...;
};
enum bpf_cmd { BPF_LINK_CREATE, ... };
struct ring_buffer_opts { size_t sz; ...; };
struct bpf_map_batch_opts { size_t sz; uint64_t elem_flags; uint64_t flags; ...; };
struct bpf_test_run_opts {
    size_t sz;
    const void *ctx_in;
    uint32_t ctx_size_in;
    int repeat;
    uint32_t retval;
    ...;
};

/* libbpf: version, logging, errors */
uint32_t libbpf_major_version(void);
uint32_t libbpf_minor_version(void);
const char *libbpf_version_string(void);
int libbpf_strerror(int err, char *buf, size_t size);
int libbpf_num_possible_cpus(void);
const char *libbpf_bpf_prog_type_str(enum bpf_prog_type t);
const char *libbpf_bpf_map_type_str(enum bpf_map_type t);
int libbpf_probe_bpf_prog_type(enum bpf_prog_type prog_type, const void *opts);
int libbpf_probe_bpf_map_type(enum bpf_map_type map_type, const void *opts);

/* objects */
struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
const char *bpf_object__name(const struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);

/* programs */
const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
int bpf_program__set_type(struct bpf_program *prog, enum bpf_prog_type type);
int bpf_program__set_expected_attach_type(struct bpf_program *prog, int type);
int bpf_program__fd(const struct bpf_program *prog);
enum bpf_prog_type bpf_program__type(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_uprobe_opts(const struct bpf_program *prog, pid_t pid,
    const char *binary_path, size_t func_offset, const struct bpf_uprobe_opts *opts);
int bpf_link__destroy(struct bpf_link *link);
int bpf_link__fd(const struct bpf_link *link);
int bpf_prog_test_run_opts(int prog_fd, struct bpf_test_run_opts *opts);

/* maps */
const char *bpf_map__name(const struct bpf_map *map);
int bpf_map__fd(const struct bpf_map *map);
enum bpf_map_type bpf_map__type(const struct bpf_map *map);
uint32_t bpf_map__key_size(const struct bpf_map *map);
uint32_t bpf_map__value_size(const struct bpf_map *map);
uint32_t bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, uint32_t max_entries);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
int bpf_map__lookup_elem(const struct bpf_map *map, const void *key, size_t key_sz,
    void *value, size_t value_sz, uint64_t flags);
int bpf_map__update_elem(const struct bpf_map *map, const void *key, size_t key_sz,
    const void *value, size_t value_sz, uint64_t flags);
int bpf_map__delete_elem(const struct bpf_map *map, const void *key, size_t key_sz, uint64_t flags);
int bpf_map__get_next_key(const struct bpf_map *map, const void *cur_key, void *next_key, size_t key_sz);
int bpf_map_lookup_batch(int fd, void *in_batch, void *out_batch, void *keys, void *values,
    uint32_t *count, const struct bpf_map_batch_opts *opts);
int bpf_map_update_batch(int fd, const void *keys, const void *values, uint32_t *count,
    const struct bpf_map_batch_opts *opts);

/* ring buffers */
typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);
struct ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb, void *ctx,
    const struct ring_buffer_opts *opts);
void ring_buffer__free(struct ring_buffer *rb);
int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
int ring_buffer__epoll_fd(const struct ring_buffer *rb);

/* BTF */
struct btf *btf__load_vmlinux_btf(void);
struct btf_ext;
struct btf *btf__parse(const char *path, struct btf_ext **btf_ext);
void btf__free(struct btf *btf);
uint32_t btf__type_cnt(const struct btf *btf);
int32_t btf__find_by_name_kind(const struct btf *btf, const char *type_name, uint32_t kind);
const struct btf_type *btf__type_by_id(const struct btf *btf, uint32_t id);
const char *btf__name_by_offset(const struct btf *btf, uint32_t offset);
int64_t btf__resolve_size(const struct btf *btf, uint32_t type_id);

/* memwatcher helpers */
struct mw_sink {
    char *buf;
    size_t record_size;
    size_t capacity;
    size_t count;
    uint64_t oversized;
};
int mw_sink_copy(void *ctx, void *data, size_t size);
int mw_sink_count(void *ctx, void *data, size_t size);
void mw_log_install(void);
int mw_log_set_debug(int on);
size_t mw_log_take(char *out, size_t cap);
int mw_map_dump(int fd, uint32_t key_size, uint32_t value_size, const void *start_key,
    void *keys, void *values, uint32_t max_entries, uint32_t *count);
int mw_sys_bpf(int cmd, void *attr, unsigned int size);
"""

SOURCE = r"""
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>

/* ---- log capture: libbpf_set_print is process-wide, so lines go to one
 * bounded buffer that the binding drains into the exception it raises. The
 * tail matters most (the verifier states its verdict last), so when full the
 * oldest half is discarded. */
#define MW_LOG_CAP (256 * 1024)
static char mw_log_buf[MW_LOG_CAP];
static size_t mw_log_len;
static int mw_log_debug;
static pthread_mutex_t mw_log_lock = PTHREAD_MUTEX_INITIALIZER;

static void mw_log_append(const char *text, size_t n)
{
    pthread_mutex_lock(&mw_log_lock);
    if (n > MW_LOG_CAP) {  /* keep the tail of a huge message */
        text += n - MW_LOG_CAP;
        n = MW_LOG_CAP;
    }
    if (mw_log_len + n > MW_LOG_CAP) {
        size_t keep = MW_LOG_CAP - n < mw_log_len / 2 ? MW_LOG_CAP - n : mw_log_len / 2;
        memmove(mw_log_buf, mw_log_buf + mw_log_len - keep, keep);
        mw_log_len = keep;
    }
    memcpy(mw_log_buf + mw_log_len, text, n);
    mw_log_len += n;
    pthread_mutex_unlock(&mw_log_lock);
}

static int mw_log_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    char line[1024], *big;
    va_list again;
    int n;

    if (level == LIBBPF_DEBUG && !mw_log_debug)
        return 0;
    va_copy(again, ap);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    if (n >= (int)sizeof(line) && (big = malloc(n + 1))) {
        /* libbpf prints the whole verifier log as one message */
        vsnprintf(big, n + 1, fmt, again);
        mw_log_append(big, n);
        free(big);
    } else if (n > 0) {
        mw_log_append(line, n < (int)sizeof(line) ? n : (int)sizeof(line) - 1);
    }
    va_end(again);
    return 0;
}

static void mw_log_install(void) { libbpf_set_print(mw_log_print); }
/* Returns the previous setting, so a caller can restore it. */
static int mw_log_set_debug(int on) { int was = mw_log_debug; mw_log_debug = on; return was; }

static size_t mw_log_take(char *out, size_t cap)
{
    size_t n;
    pthread_mutex_lock(&mw_log_lock);
    n = mw_log_len < cap ? mw_log_len : cap;
    memcpy(out, mw_log_buf + mw_log_len - n, n);
    mw_log_len = 0;
    pthread_mutex_unlock(&mw_log_lock);
    return n;
}

/* ---- ring buffer sinks. libbpf advances the consumer position before the
 * callback runs, so a record is never refused: the sink stores it and only
 * then, when the buffer has no room for another, stops the consume loop with
 * -ENOSPC so the caller can decode the batch and call again. */
struct mw_sink {
    char *buf;
    size_t record_size;
    size_t capacity;
    size_t count;
    uint64_t oversized;
};

static int mw_sink_copy(void *ctx, void *data, size_t size)
{
    struct mw_sink *s = ctx;
    char *slot = s->buf + s->count * s->record_size;

    if (size >= s->record_size) {
        memcpy(slot, data, s->record_size);
        if (size > s->record_size)
            s->oversized++;
    } else {
        memcpy(slot, data, size);
        memset(slot + size, 0, s->record_size - size);
    }
    s->count++;
    return s->count >= s->capacity ? -ENOSPC : 0;
}

static int mw_sink_count(void *ctx, void *data, size_t size)
{
    ((struct mw_sink *)ctx)->count++;
    return 0;
}

/* ---- map dump without BPF_MAP_LOOKUP_BATCH: get_next_key + lookup in C.
 * Continues after start_key (NULL = from the beginning); a key deleted
 * between the two calls is skipped. Returns 0 when the map is exhausted,
 * -ENOSPC when max_entries were stored (resume after the last key). */
static int mw_map_dump(int fd, uint32_t key_size, uint32_t value_size, const void *start_key,
                       void *keys, void *values, uint32_t max_entries, uint32_t *count)
{
    const char *prev = start_key;
    char *k = keys, *v = values;
    uint32_t n = 0;

    while (n < max_entries) {
        char *slot = k + (size_t)n * key_size;
        if (bpf_map_get_next_key(fd, prev, slot)) {
            int err = errno;
            *count = n;
            return err == ENOENT ? 0 : -err;
        }
        if (bpf_map_lookup_elem(fd, slot, v + (size_t)n * value_size) == 0) {
            prev = slot;
            n++;
        } else {
            /* deleted meanwhile: continue from it without storing it */
            static __thread char scratch[512];
            if (key_size > sizeof(scratch)) { *count = n; return -E2BIG; }
            memcpy(scratch, slot, key_size);
            prev = scratch;
        }
    }
    *count = n;
    return -ENOSPC;
}

/* ---- bpf(2) with attributes the caller laid out; returns the result or -errno. */
static int mw_sys_bpf(int cmd, void *attr, unsigned int size)
{
    long ret = syscall(__NR_bpf, cmd, attr, size);
    return ret < 0 ? -errno : (int)ret;
}
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "memwatcher._libbpf",
    SOURCE,
    libraries=["bpf"],
    py_limited_api=True,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
