/* nbdkit-reduce-plugin: serves a reduce volume over NBD.
 *
 *   nbdkit nbdkit-reduce-plugin.so file=FILE [check=true] [io_threads=N]
 *   nbdkit nbdkit-reduce-plugin.so file=FILE create=true size=SIZE pm_dir=DIR
 *          [chunk_size=16K] [io_unit=4K] [block_size=512]
 *
 * Threads. A volume is single-threaded: one thread, the owner, loads it, makes every
 * call on it and delivers every completion of its backing device, from a poll loop.
 * nbdkit's request threads (thread model PARALLEL) queue their requests to the owner,
 * wake it through an eventfd and wait on a semaphore, so as many requests are in
 * flight as nbdkit has threads. The backing device is FILE: its reads and writes run
 * on a few I/O threads, whose completions go back to the owner through the same
 * eventfd, so the volume has several backing operations outstanding at once.
 *
 * Durability. FILE is opened with O_DSYNC: a backing write completes only once its
 * data is on stable storage, and the library persists its pm metadata before it
 * completes a volume write. So a write is durable when nbdkit acknowledges it, FUA is
 * native and flush has nothing left to do. A crash never leaves the pm metadata
 * pointing at data that was only in the page cache.
 *
 * Requests. The volume takes requests of whole logical blocks, across chunks, as one
 * call each. The partial blocks at the ends of a request not aligned to logical
 * blocks are read whole; for a write they are modified and written back while the
 * write excludes every other request, so it never loses a concurrent write to the
 * same block. The block sizes advertised to clients keep well-behaved clients aligned.
 *
 * Trim and zero are both spdk_reduce_vol_unmap: the chunks a request covers whole
 * become empty (no space, read as zeros), those it covers in part have the blocks
 * zeroed. Zero ignores NBDKIT_FLAG_MAY_TRIM, as nbdkit allows: the volume never
 * stores a chunk of zeros, so writing zeros would leave the very same empty chunks.
 *
 * Codec. The volume is served with the codec its superblock records (zstd or lz4, at
 * its level); one that records none (the 2019 libreduce, or a caller's own codec) is
 * refused, its chunks being unreadable here. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#include "spdk/reduce.h"

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

#ifndef REDUCE_VERSION
#define REDUCE_VERSION "unknown"
#endif

/* The backing file's block: divides 4096 and any io unit a volume can have. */
#define BACKING_BLOCKLEN 512
#define MAX_IO_THREADS 64

/* ---- configuration ---- */

static struct {
	char *file;
	char *pm_dir;
	bool create;
	int64_t size;
	uint32_t chunk_size, io_unit, block_size;
	bool check;
	unsigned io_threads;
} cfg = {.chunk_size = 16384, .io_unit = 4096, .block_size = 512, .io_threads = 4};

/* ---- the backing device: FILE, completing inline or through the I/O threads ---- */

enum dev_op { DEV_READ, DEV_WRITE, DEV_UNMAP };

/* One backing operation handed to an I/O thread. */
struct io_job {
	struct io_job *next;
	enum dev_op op;
	off_t offset;
	size_t len;
	struct spdk_reduce_vol_cb_args *args;
	int status;
	int iovcnt;
	struct iovec iov[]; /* a copy: advanced in place on a short transfer */
};

struct job_list {
	struct io_job *head, *tail;
};

static void job_push(struct job_list *l, struct io_job *j)
{
	j->next = NULL;
	if (l->tail) {
		l->tail->next = j;
	} else {
		l->head = j;
	}
	l->tail = j;
}

/* A volume request from an nbdkit thread. It lives on that thread's stack: the owner
 * must not touch it once `done` is posted. */
enum req_op { REQ_READ, REQ_WRITE, REQ_ZERO, REQ_TRIM };

struct request {
	struct request *next;
	enum req_op op;
	uint8_t *buf; /* NULL for REQ_ZERO and REQ_TRIM */
	uint64_t block, nblocks;
	int status;
	sem_t done;
};

static struct {
	struct spdk_reduce_backing_dev dev;
	int fd;
	bool deferred; /* false: operations complete inside the call (before the owner runs) */

	/* The volume as loaded before the fork: what nbdkit asks for per connection. */
	struct spdk_reduce_vol_params params;

	/* I/O threads: pending operations, under io_lock. */
	pthread_mutex_t io_lock;
	pthread_cond_t io_cond;
	struct job_list io_queue;
	bool io_stop;
	pthread_t io_thread[MAX_IO_THREADS];
	unsigned io_threads_running;

	/* The owner: its wake-up eventfd, and what others hand it, under lock. */
	pthread_t owner;
	bool owner_running;
	int efd;
	pthread_mutex_t lock;
	struct job_list completed;
	struct request *req_head, *req_tail;
	bool stop;
	sem_t owner_ready;
	int owner_status; /* the owner's load result, for after_fork */

	/* Owned by the owner thread once it runs. */
	struct spdk_reduce_vol *vol;

	/* Aligned requests hold it shared; an unaligned write holds it exclusively. */
	pthread_rwlock_t rmw_lock;
} st = {
	.fd = -1,
	.efd = -1,
	.io_lock = PTHREAD_MUTEX_INITIALIZER,
	.io_cond = PTHREAD_COND_INITIALIZER,
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

static void wake_owner(void)
{
	uint64_t one = 1;
	/* Only fails if the counter would overflow, and then the owner is awake anyway. */
	while (write(st.efd, &one, sizeof(one)) < 0 && errno == EINTR) {
	}
}

/* Runs `j` to the end: a short transfer continues where it stopped. */
static int run_job(struct io_job *j)
{
	if (j->op == DEV_UNMAP) {
		/* Discard is advisory: a file system without hole punching keeps the data. */
		if (fallocate(st.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, j->offset,
			      (off_t)j->len) < 0 &&
		    errno != EOPNOTSUPP) {
			return -errno;
		}
		return 0;
	}
	struct iovec *iov = j->iov;
	int iovcnt = j->iovcnt;
	off_t at = j->offset;
	size_t left = j->len;
	while (left > 0) {
		ssize_t n = j->op == DEV_READ ? preadv(st.fd, iov, iovcnt, at)
					      : pwritev(st.fd, iov, iovcnt, at);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		if (n == 0) {
			return -EIO; /* the file shrank under the volume */
		}
		at += n;
		left -= (size_t)n;
		while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static void *io_thread(void *unused)
{
	(void)unused;
	pthread_mutex_lock(&st.io_lock);
	for (;;) {
		while (!st.io_queue.head && !st.io_stop) {
			pthread_cond_wait(&st.io_cond, &st.io_lock);
		}
		struct io_job *j = st.io_queue.head;
		if (!j) {
			break; /* stopping, and nothing left */
		}
		st.io_queue.head = j->next;
		if (!st.io_queue.head) {
			st.io_queue.tail = NULL;
		}
		pthread_mutex_unlock(&st.io_lock);

		j->status = run_job(j);
		pthread_mutex_lock(&st.lock);
		job_push(&st.completed, j);
		pthread_mutex_unlock(&st.lock);
		wake_owner();

		pthread_mutex_lock(&st.io_lock);
	}
	pthread_mutex_unlock(&st.io_lock);
	return NULL;
}

/* Every backing operation: inline before the owner runs, else on an I/O thread with
 * the completion delivered by the owner's poll loop. */
static void dev_submit(enum dev_op op, struct iovec *iov, int iovcnt, uint64_t lba,
		       uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	struct io_job *j = malloc(sizeof(*j) + (size_t)iovcnt * sizeof(struct iovec));
	if (!j) {
		args->cb_fn(args->cb_arg, -ENOMEM);
		return;
	}
	*j = (struct io_job){
		.op = op,
		.offset = (off_t)(lba * BACKING_BLOCKLEN),
		.len = (size_t)lba_count * BACKING_BLOCKLEN,
		.args = args,
		.iovcnt = iovcnt,
	};
	if (iovcnt > 0) {
		memcpy(j->iov, iov, (size_t)iovcnt * sizeof(struct iovec));
	}
	if (!st.deferred) {
		int status = run_job(j);
		free(j);
		args->cb_fn(args->cb_arg, status);
		return;
	}
	pthread_mutex_lock(&st.io_lock);
	job_push(&st.io_queue, j);
	pthread_cond_signal(&st.io_cond);
	pthread_mutex_unlock(&st.io_lock);
}

static void dev_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		      uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	(void)dev;
	dev_submit(DEV_READ, iov, iovcnt, lba, lba_count, args);
}

static void dev_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	(void)dev;
	dev_submit(DEV_WRITE, iov, iovcnt, lba, lba_count, args);
}

static void dev_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		      struct spdk_reduce_vol_cb_args *args)
{
	(void)dev;
	dev_submit(DEV_UNMAP, NULL, 0, lba, lba_count, args);
}

static void log_to_nbdkit(void *ctx, int level, const char *msg)
{
	(void)ctx;
	if (level == REDUCE_LOG_ERROR) {
		nbdkit_error("libreduce: %s", msg);
	} else {
		nbdkit_debug("libreduce: %s", msg);
	}
}

/* ---- volume calls, waited for ---- */

struct wait {
	bool done;
	int status;
	struct spdk_reduce_vol *vol;
};

static void opened(void *ctx, struct spdk_reduce_vol *vol, int status)
{
	struct wait *w = ctx;
	w->vol = vol;
	w->status = status;
	w->done = true;
}

static void finished(void *ctx, int status)
{
	struct wait *w = ctx;
	w->status = status;
	w->done = true;
}

struct check_wait {
	bool done;
	int status;
	struct reduce_vol_check_report report;
};

static void checked(void *ctx, int status, const struct reduce_vol_check_report *report)
{
	struct check_wait *w = ctx;
	w->status = status;
	if (report) {
		w->report = *report;
	}
	w->done = true;
}

/* The owner sleeps until an I/O thread, a request or the shutdown wakes it. */
static void wait_wakeup(void)
{
	uint64_t n;
	/* Reading 8 bytes from a valid eventfd fails only when interrupted. */
	while (read(st.efd, &n, sizeof(n)) < 0 && errno == EINTR) {
	}
}

static void deliver_completions(void);

/* Until *done: inline, the callback has already run; deferred, the owner polls. */
static void wait_for(const bool *done)
{
	while (!*done) {
		wait_wakeup();
		deliver_completions();
	}
}

static struct spdk_reduce_vol *load_volume(void)
{
	struct wait w = {0};
	spdk_reduce_vol_load(&st.dev, opened, &w);
	wait_for(&w.done);
	if (w.status == -EILSEQ) {
		nbdkit_error("%s: not a reduce volume, or its pm file does not match it", cfg.file);
		return NULL;
	}
	if (w.status != 0) {
		nbdkit_error("%s: cannot load the volume: %s%s", cfg.file, strerror(-w.status),
			     w.status == -ENOENT ? " (its pm file is missing)" : "");
		return NULL;
	}
	return w.vol;
}

static int unload_volume(struct spdk_reduce_vol *vol)
{
	struct wait w = {0};
	spdk_reduce_vol_unload(vol, finished, &w);
	wait_for(&w.done);
	if (w.status != 0) {
		nbdkit_error("%s: unload: %s", cfg.file, strerror(-w.status));
	}
	return w.status;
}

static int check_volume(struct spdk_reduce_vol *vol)
{
	struct check_wait w = {0};
	reduce_vol_check(vol, checked, &w);
	wait_for(&w.done);
	if (w.status != 0) {
		const char *what = w.status == -EILSEQ ? "metadata problems"
				   : w.status == -EIO  ? "data that does not read back"
						       : strerror(-w.status);
		nbdkit_error("%s: the checker found %s: %" PRIu64 " problem(s), the first: %s",
			     cfg.file, what, w.report.problems, w.report.first_problem);
		return -1;
	}
	nbdkit_debug("%s: check clean: %" PRIu64 " chunks, %" PRIu64 " io units", cfg.file,
		     w.report.chunks_in_use, w.report.io_units_referenced);
	return 0;
}

/* ---- the owner thread ---- */

static void request_done(void *ctx, int status)
{
	struct request *r = ctx;
	r->status = status;
	sem_post(&r->done); /* r belongs to its waiter again from here */
}

/* One call, whatever chunks the request crosses; the volume copies the iovec array
 * during the call. r may be gone once the call returns (it can complete inside). */
static void submit_request(struct request *r)
{
	struct iovec iov = {r->buf, r->nblocks * st.params.logical_block_size};
	switch (r->op) {
	case REQ_READ:
		spdk_reduce_vol_readv(st.vol, &iov, 1, r->block, r->nblocks, request_done, r);
		break;
	case REQ_WRITE:
		spdk_reduce_vol_writev(st.vol, &iov, 1, r->block, r->nblocks, request_done, r);
		break;
	case REQ_ZERO:
	case REQ_TRIM:
		spdk_reduce_vol_unmap(st.vol, r->block, r->nblocks, request_done, r);
		break;
	}
}

/* Delivers the I/O threads' completions; each may submit more backing operations. */
static void deliver_completions(void)
{
	pthread_mutex_lock(&st.lock);
	struct io_job *j = st.completed.head;
	st.completed = (struct job_list){0};
	pthread_mutex_unlock(&st.lock);
	while (j) {
		struct io_job *next = j->next;
		struct spdk_reduce_vol_cb_args *args = j->args;
		int status = j->status;
		free(j);
		args->cb_fn(args->cb_arg, status);
		j = next;
	}
}

static void start_io_threads(void)
{
	st.io_stop = false;
	for (st.io_threads_running = 0; st.io_threads_running < cfg.io_threads;
	     st.io_threads_running++) {
		if (pthread_create(&st.io_thread[st.io_threads_running], NULL, io_thread, NULL) != 0) {
			break; /* fewer I/O threads still work */
		}
	}
}

static void stop_io_threads(void)
{
	pthread_mutex_lock(&st.io_lock);
	st.io_stop = true;
	pthread_cond_broadcast(&st.io_cond);
	pthread_mutex_unlock(&st.io_lock);
	for (unsigned i = 0; i < st.io_threads_running; i++) {
		pthread_join(st.io_thread[i], NULL);
	}
	st.io_threads_running = 0;
}

static void *owner_thread(void *unused)
{
	(void)unused;
	st.vol = load_volume();
	st.owner_status = st.vol ? 0 : -1;
	sem_post(&st.owner_ready);
	if (!st.vol) {
		return NULL;
	}

	for (;;) {
		wait_wakeup();
		deliver_completions();

		pthread_mutex_lock(&st.lock);
		struct request *r = st.req_head;
		st.req_head = st.req_tail = NULL;
		bool stop = st.stop;
		pthread_mutex_unlock(&st.lock);
		while (r) {
			struct request *next = r->next; /* r may be gone once submitted */
			submit_request(r);
			r = next;
		}
		/* nbdkit stops the plugin only after its last request has returned. */
		if (stop) {
			break;
		}
	}
	unload_volume(st.vol);
	st.vol = NULL;
	return NULL;
}

/* ---- requests from nbdkit's threads ---- */

/* Hands a request in whole logical blocks to the owner and waits for it. */
static int run_request(enum req_op op, void *buf, uint64_t block, uint64_t nblocks)
{
	struct request r = {.op = op, .buf = buf, .block = block, .nblocks = nblocks};
	sem_init(&r.done, 0, 0);
	pthread_mutex_lock(&st.lock);
	if (st.req_tail) {
		st.req_tail->next = &r;
	} else {
		st.req_head = &r;
	}
	st.req_tail = &r;
	pthread_mutex_unlock(&st.lock);
	wake_owner();
	while (sem_wait(&r.done) < 0) {
		/* EINTR: keep waiting, the owner still holds r */
	}
	sem_destroy(&r.done);
	return r.status;
}

static const char *op_name(enum req_op op)
{
	static const char *const names[] = {"read", "write", "zero", "trim"};
	return names[op];
}

static int report(enum req_op op, int status, uint64_t offset, uint64_t count)
{
	if (status == 0) {
		return 0;
	}
	nbdkit_error("%s of %" PRIu64 " bytes at %" PRIu64 ": %s", op_name(op), count, offset,
		     strerror(-status));
	nbdkit_set_error(-status);
	return -1;
}

/* `len` bytes at byte `in` of one logical block: read the block, then copy out (read)
 * or lay the bytes over it and write it back (write, zero, trim). */
static int partial_block(enum req_op op, uint8_t *buf, uint64_t block, size_t in, size_t len)
{
	uint8_t *tmp = malloc(st.params.logical_block_size);
	if (!tmp) {
		return -ENOMEM;
	}
	int status = run_request(REQ_READ, tmp, block, 1);
	if (status == 0 && op == REQ_READ) {
		memcpy(buf, tmp + in, len);
	} else if (status == 0) {
		if (op == REQ_WRITE) {
			memcpy(tmp + in, buf, len);
		} else {
			memset(tmp + in, 0, len);
		}
		status = run_request(REQ_WRITE, tmp, block, 1);
	}
	free(tmp);
	return status;
}

/* A request of any byte range: whole blocks go straight to the volume; a partial block
 * at either end goes through partial_block. A request with a partial block that
 * writes holds rmw_lock exclusively, so no other request touches that block between
 * its read and its write. */
static int do_bytes(enum req_op op, void *buf, uint32_t count, uint64_t offset)
{
	const uint64_t lbs = st.params.logical_block_size;
	const bool aligned = offset % lbs == 0 && count % lbs == 0;
	uint8_t *p = buf;
	uint64_t at = offset, left = count;
	int status = 0;

	if (aligned || op == REQ_READ) {
		pthread_rwlock_rdlock(&st.rmw_lock);
	} else {
		pthread_rwlock_wrlock(&st.rmw_lock);
	}
	while (left > 0 && status == 0) {
		uint64_t done;
		size_t in = at % lbs;
		if (in == 0 && left >= lbs) {
			done = left / lbs * lbs;
			status = run_request(op, p, at / lbs, left / lbs);
		} else {
			done = lbs - in < left ? lbs - in : left;
			status = partial_block(op, p, at / lbs, in, done);
		}
		at += done;
		left -= done;
		if (p) {
			p += done;
		}
	}
	pthread_rwlock_unlock(&st.rmw_lock);
	return report(op, status, offset, count);
}

/* ---- nbdkit callbacks ---- */

static void reduce_load(void)
{
	reduce_set_log_fn(log_to_nbdkit, NULL);
}

static void reduce_unload(void)
{
	reduce_set_log_fn(NULL, NULL);
	free(cfg.file);
	free(cfg.pm_dir);
	if (st.fd >= 0) {
		close(st.fd);
	}
	if (st.efd >= 0) {
		close(st.efd);
	}
}

static int parse_size32(const char *key, const char *value, uint32_t *out)
{
	int64_t v = nbdkit_parse_size(value);
	if (v < 0) {
		return -1;
	}
	if (v == 0 || v > UINT32_MAX) {
		nbdkit_error("%s=%s: must be between 1 and 4G", key, value);
		return -1;
	}
	*out = (uint32_t)v;
	return 0;
}

static int reduce_config(const char *key, const char *value)
{
	int b;
	if (strcmp(key, "file") == 0) {
		free(cfg.file);
		/* Absolute: nbdkit leaves the working directory when it daemonizes. */
		cfg.file = nbdkit_absolute_path(value);
		return cfg.file ? 0 : -1;
	} else if (strcmp(key, "pm_dir") == 0) {
		free(cfg.pm_dir);
		/* Absolute too: the volume records its pm file's path as given. */
		cfg.pm_dir = nbdkit_realpath(value);
		return cfg.pm_dir ? 0 : -1;
	} else if (strcmp(key, "create") == 0) {
		if ((b = nbdkit_parse_bool(value)) < 0) {
			return -1;
		}
		cfg.create = b;
	} else if (strcmp(key, "check") == 0) {
		if ((b = nbdkit_parse_bool(value)) < 0) {
			return -1;
		}
		cfg.check = b;
	} else if (strcmp(key, "size") == 0) {
		if ((cfg.size = nbdkit_parse_size(value)) < 0) {
			return -1;
		}
	} else if (strcmp(key, "chunk_size") == 0) {
		return parse_size32(key, value, &cfg.chunk_size);
	} else if (strcmp(key, "io_unit") == 0) {
		return parse_size32(key, value, &cfg.io_unit);
	} else if (strcmp(key, "block_size") == 0) {
		return parse_size32(key, value, &cfg.block_size);
	} else if (strcmp(key, "io_threads") == 0) {
		if (nbdkit_parse_unsigned(key, value, &cfg.io_threads) < 0) {
			return -1;
		}
		if (cfg.io_threads == 0 || cfg.io_threads > MAX_IO_THREADS) {
			nbdkit_error("io_threads=%s: must be between 1 and %d", value, MAX_IO_THREADS);
			return -1;
		}
	} else {
		nbdkit_error("unknown parameter '%s' (see nbdkit reduce --help)", key);
		return -1;
	}
	return 0;
}

static int reduce_config_complete(void)
{
	if (!cfg.file) {
		nbdkit_error("file=FILE is required: the backing file of the volume");
		return -1;
	}
	bool geometry_given = cfg.size || cfg.chunk_size != 16384 || cfg.io_unit != 4096 ||
			 cfg.block_size != 512;
	if (cfg.create) {
		if (!cfg.size || !cfg.pm_dir) {
			nbdkit_error("create=true needs size=SIZE (of the new backing file) and "
				     "pm_dir=DIR (where the volume's pm file goes)");
			return -1;
		}
	} else if (cfg.pm_dir || geometry_given) {
		nbdkit_error("pm_dir, size, chunk_size, io_unit and block_size apply only with "
			     "create=true: an existing volume records its geometry and pm file");
		return -1;
	}
	return 0;
}

#define reduce_config_help                                                                 \
	"file=FILE          (required) The volume's backing file.\n"                        \
	"check=BOOL         Run the volume checker before serving (default false).\n"     \
	"io_threads=N       Threads doing the backing file's I/O (default 4).\n"           \
	"create=BOOL        Make FILE (it must not exist) and a new volume on it:\n"       \
	"  size=SIZE        the backing file's size (e.g. 1G); the volume is a bit smaller\n" \
	"  pm_dir=DIR       the directory for the volume's pm (metadata) file\n"           \
	"  chunk_size=SIZE  unit of compression (default 16K)\n"                           \
	"  io_unit=SIZE     unit of allocation on FILE (default 4K)\n"                     \
	"  block_size=SIZE  logical block, the smallest aligned I/O (default 512)"

/* Makes FILE (sparse, `size` bytes) and a new volume on it, inline on this thread,
 * then unloads it. A failure removes FILE again. */
static int create_volume(void)
{
	st.fd = open(cfg.file, O_RDWR | O_CREAT | O_EXCL | O_DSYNC | O_CLOEXEC, 0600);
	if (st.fd < 0) {
		nbdkit_error("create %s: %m%s", cfg.file,
			     errno == EEXIST ? " (create=true makes a new file; drop it to serve "
					       "the existing one)"
					     : "");
		return -1;
	}
	if (ftruncate(st.fd, cfg.size) < 0) {
		nbdkit_error("create %s: size %" PRId64 ": %m", cfg.file, cfg.size);
		goto fail;
	}
	st.dev.blockcnt = (uint64_t)cfg.size / BACKING_BLOCKLEN;
	struct spdk_reduce_vol_params params = {
		.backing_io_unit_size = cfg.io_unit,
		.logical_block_size = cfg.block_size,
		.chunk_size = cfg.chunk_size,
	};
	struct wait w = {0};
	spdk_reduce_vol_init(&params, &st.dev, cfg.pm_dir, opened, &w);
	wait_for(&w.done);
	if (w.status != 0) {
		nbdkit_error("create %s: %s%s", cfg.file, strerror(-w.status),
			     w.status == -EINVAL ? " (check size, chunk_size, io_unit, block_size: "
						   "the chunk a multiple of both, io_unit of 512, "
						   "and more than 128 chunks)"
						 : "");
		goto fail;
	}
	nbdkit_debug("created %s: volume of %" PRIu64 " bytes, pm file %s", cfg.file,
		     params.vol_size, spdk_reduce_vol_get_pm_path(w.vol));
	if (unload_volume(w.vol) != 0) {
		return -1;
	}
	/* The new file's size and its directory entry, which O_DSYNC writes do not cover. */
	char *dir = strdup(cfg.file);
	int dfd = dir ? open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	int rc = fsync(st.fd) == 0 && dfd >= 0 && fsync(dfd) == 0 ? 0 : -1;
	if (rc < 0) {
		nbdkit_error("create %s: making it durable: %m", cfg.file);
	}
	if (dfd >= 0) {
		close(dfd);
	}
	free(dir);
	return rc;
fail:
	close(st.fd);
	st.fd = -1;
	unlink(cfg.file);
	return -1;
}

/* Sets the device's codec to the one the volume's superblock records, taking effect at
 * the next load; refuses a volume whose codec this plugin does not have. */
static int use_recorded_codec(const struct spdk_reduce_vol_info *info)
{
	const char *algo = info->comp_algo == REDUCE_COMP_ALGO_ZSTD  ? "zstd"
			   : info->comp_algo == REDUCE_COMP_ALGO_LZ4 ? "lz4"
								     : NULL;
	if (!algo) {
		nbdkit_error("%s: %s", cfg.file,
			     info->comp_algo == REDUCE_COMP_ALGO_DEFLATE
				 ? "the volume records no codec (the 2019 libreduce, or a program "
				   "with its own codec, made it): this plugin has only zstd and lz4 "
				   "and cannot read its chunks"
				 : "the volume records a codec this plugin does not have (only zstd "
				   "and lz4)");
		if (info->comp_algo != REDUCE_COMP_ALGO_DEFLATE) {
			nbdkit_error("%s: recorded comp_algo %" PRIu32 ", comp_level %" PRIu32,
				     cfg.file, info->comp_algo, info->comp_level);
		}
		return -1;
	}
	if (reduce_backing_dev_set_codec(&st.dev, algo, (int)info->comp_level) != 0) {
		nbdkit_error("%s: the volume records %s at level %" PRIu32
			     ", a level this library does not have",
			     cfg.file, algo, info->comp_level);
		return -1;
	}
	return 0;
}

/* Before nbdkit forks: create the volume if asked, then load it once here (inline) so
 * that every error shows before nbdkit goes to the background. */
static int reduce_get_ready(void)
{
	st.dev = (struct spdk_reduce_backing_dev){
		.readv = dev_readv,
		.writev = dev_writev,
		.unmap = dev_unmap,
		.compress = reduce_zstd_compress,
		.decompress = reduce_zstd_decompress,
		.blocklen = BACKING_BLOCKLEN,
	};
	st.efd = eventfd(0, EFD_CLOEXEC);
	if (st.efd < 0) {
		nbdkit_error("eventfd: %m");
		return -1;
	}
	if (cfg.create) {
		if (create_volume() < 0) {
			return -1;
		}
	} else {
		st.fd = open(cfg.file, O_RDWR | O_DSYNC | O_CLOEXEC);
		struct stat sb;
		if (st.fd < 0 || fstat(st.fd, &sb) < 0) {
			nbdkit_error("%s: %m", cfg.file);
			return -1;
		}
		st.dev.blockcnt = (uint64_t)sb.st_size / BACKING_BLOCKLEN;
	}

	/* Loading reads no chunk, so the codec the device has now does not matter yet. */
	struct spdk_reduce_vol *vol = load_volume();
	if (!vol) {
		return -1;
	}
	st.params = *spdk_reduce_vol_get_params(vol);
	const struct spdk_reduce_vol_info info = *spdk_reduce_vol_get_info(vol);
	if (unload_volume(vol) != 0 || use_recorded_codec(&info) < 0) {
		return -1;
	}
	nbdkit_debug("%s: %" PRIu64 " bytes, chunk %" PRIu32 ", io unit %" PRIu32
		     ", logical block %" PRIu32 ", codec %s level %" PRIu32,
		     cfg.file, st.params.vol_size, st.params.chunk_size,
		     st.params.backing_io_unit_size, st.params.logical_block_size,
		     info.comp_algo == REDUCE_COMP_ALGO_LZ4 ? "lz4" : "zstd", info.comp_level);
	if (!cfg.check) {
		return 0;
	}
	/* The checker decompresses every chunk: a fresh load, with the volume's codec. */
	if (!(vol = load_volume())) {
		return -1;
	}
	int rc = check_volume(vol);
	return unload_volume(vol) != 0 ? -1 : rc;
}

/* After the fork: the owner thread loads the volume for good and serves it. */
static int reduce_after_fork(void)
{
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	/* A waiting unaligned write must not starve behind a stream of aligned requests. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&st.rmw_lock, &attr);
	pthread_rwlockattr_destroy(&attr);

	sem_init(&st.owner_ready, 0, 0);
	st.deferred = true;
	start_io_threads();
	if (st.io_threads_running == 0 || pthread_create(&st.owner, NULL, owner_thread, NULL) != 0) {
		nbdkit_error("cannot start the plugin's threads");
		stop_io_threads();
		return -1;
	}
	while (sem_wait(&st.owner_ready) < 0) {
	}
	if (st.owner_status != 0) {
		pthread_join(st.owner, NULL);
		stop_io_threads();
		return -1;
	}
	st.owner_running = true;
	return 0;
}

/* nbdkit is shutting down and every connection is closed: unload the volume. */
static void reduce_cleanup(void)
{
	if (!st.owner_running) {
		return;
	}
	pthread_mutex_lock(&st.lock);
	st.stop = true;
	pthread_mutex_unlock(&st.lock);
	wake_owner();
	pthread_join(st.owner, NULL);
	st.owner_running = false;
	stop_io_threads();
	nbdkit_debug("%s: volume unloaded", cfg.file);
}

/* All connections share the one volume: the handle carries nothing. */
static int handle;

static void *reduce_open(int readonly)
{
	(void)readonly;
	return &handle;
}

static int64_t reduce_get_size(void *h)
{
	(void)h;
	return (int64_t)st.params.vol_size;
}

static int reduce_block_size(void *h, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum)
{
	(void)h;
	uint32_t lbs = st.params.logical_block_size;
	bool lbs_pow2 = (lbs & (lbs - 1)) == 0 && lbs <= 65536;
	uint32_t chunk = st.params.chunk_size;
	*minimum = lbs_pow2 ? lbs : 1;
	/* A whole chunk is written without reading the old one first. */
	*preferred = (chunk & (chunk - 1)) == 0 && chunk >= 512 && chunk <= (32u << 20) ? chunk : 4096;
	if (*preferred < *minimum) {
		*preferred = *minimum;
	}
	*maximum = 0xffffffff;
	return 0;
}

/* Every acknowledged write is already durable (see the top of this file). */
static int reduce_can_flush(void *h)
{
	(void)h;
	return 1;
}

static int reduce_can_fua(void *h)
{
	(void)h;
	return NBDKIT_FUA_NATIVE;
}

/* One volume behind every connection, and flush covers them all. */
static int reduce_can_multi_conn(void *h)
{
	(void)h;
	return 1;
}

static int reduce_can_zero(void *h)
{
	(void)h;
	return 1;
}

static int reduce_can_trim(void *h)
{
	(void)h;
	return 1;
}

static int reduce_pread(void *h, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
{
	(void)h;
	(void)flags;
	return do_bytes(REQ_READ, buf, count, offset);
}

static int reduce_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset,
			 uint32_t flags)
{
	(void)h;
	(void)flags; /* FUA: the write is durable when it completes anyway */
	return do_bytes(REQ_WRITE, (void *)buf, count, offset);
}

/* FUA: an unmap is persisted when it completes. MAY_TRIM: see the top of this file. */
static int reduce_zero(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	(void)h;
	(void)flags;
	return do_bytes(REQ_ZERO, NULL, count, offset);
}

static int reduce_trim(void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
	(void)h;
	(void)flags; /* FUA: as for zero */
	return do_bytes(REQ_TRIM, NULL, count, offset);
}

static int reduce_flush(void *h, uint32_t flags)
{
	(void)h;
	(void)flags;
	return 0;
}

static struct nbdkit_plugin plugin = {
	.name = "reduce",
	.longname = "reduce: compressed block volumes",
	.version = REDUCE_VERSION,
	.description = "Serves a reduce volume (compressed, SPDK libreduce format).",
	.load = reduce_load,
	.unload = reduce_unload,
	.config = reduce_config,
	.config_complete = reduce_config_complete,
	.config_help = reduce_config_help,
	.magic_config_key = "file",
	.get_ready = reduce_get_ready,
	.after_fork = reduce_after_fork,
	.cleanup = reduce_cleanup,
	.open = reduce_open,
	.get_size = reduce_get_size,
	.block_size = reduce_block_size,
	.can_flush = reduce_can_flush,
	.can_fua = reduce_can_fua,
	.can_multi_conn = reduce_can_multi_conn,
	.can_zero = reduce_can_zero,
	.can_trim = reduce_can_trim,
	.pread = reduce_pread,
	.pwrite = reduce_pwrite,
	.zero = reduce_zero,
	.trim = reduce_trim,
	.flush = reduce_flush,
};

NBDKIT_REGISTER_PLUGIN(plugin)
