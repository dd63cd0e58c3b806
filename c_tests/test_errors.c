/* The error contract (DESIGN §4) from C: every row reachable through the ABI. Each
 * failure arrives through the callback as a negative errno and leaves nothing behind:
 * no pm file after a failed init, no io unit held after a failed write, no stale error
 * on the next request. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "tests.h"

#define CHUNKS 16
#define BPC 32
#define CHUNK 16384

/* Inits with `p` on a fresh device and expects `err`, a NULL volume and no file left. */
static void expect_init_fails(struct mem_dev *d, struct spdk_reduce_vol_params *p,
			      const char *dir, const char *pm_dir, int err)
{
	struct spdk_reduce_vol *vol = (void *)1;
	CHECK_EQ(h_init(d, p, pm_dir, &vol), err);
	CHECK(vol == NULL);
	CHECK_EQ(count_files(dir), 0);
}

void test_init_einval(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64], long_dir[5000];

	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, 512, blockcnt_for_chunks(CHUNKS), deferred);
	struct {
		const char *what;
		uint32_t io, lbs, chunk;
		uint64_t vol_size;
	} rows[] = {
		{"vol_size set", 4096, 512, 16384, 16384},
		{"zero io unit", 0, 512, 16384, 0},
		{"zero logical block", 4096, 0, 16384, 0},
		{"zero chunk", 4096, 512, 0, 0},
		{"chunk not a multiple of io unit", 4096, 512, 6144, 0},
		{"chunk not a multiple of logical block", 2048, 4096, 6144, 0},
		{"io unit not a multiple of blocklen", 768, 256, 3072, 0},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		default_params(&p);
		p.backing_io_unit_size = rows[i].io;
		p.logical_block_size = rows[i].lbs;
		p.chunk_size = rows[i].chunk;
		p.vol_size = rows[i].vol_size;
		int before = g_test_failures;
		expect_init_fails(&d, &p, dir, dir, -EINVAL);
		if (g_test_failures != before) {
			fprintf(stderr, "    (row: %s)\n", rows[i].what);
		}
	}
	default_params(&p);
	expect_init_fails(&d, &p, dir, NULL, -EINVAL);
	expect_init_fails(&d, &p, dir, "", -EINVAL);
	memset(long_dir, 'a', sizeof(long_dir) - 1);
	long_dir[0] = '/';
	long_dir[sizeof(long_dir) - 1] = 0;
	expect_init_fails(&d, &p, dir, long_dir, -EINVAL);

	/* A device too small for even one chunk beyond the extra ones. */
	struct mem_dev tiny;
	mem_dev_init(&tiny, 512, blockcnt_for_chunks(0), deferred);
	expect_init_fails(&tiny, &p, dir, dir, -EINVAL);
	mem_dev_free(&tiny);

	/* No device, and each of its five functions missing. */
	spdk_reduce_vol_init(&p, NULL, dir, NULL, NULL); /* NULL callback: nothing to tell */
	for (int k = 0; k < 5; k++) {
		struct mem_dev broken;
		mem_dev_init(&broken, 512, blockcnt_for_chunks(CHUNKS), deferred);
		switch (k) {
		case 0: broken.dev.readv = NULL; break;
		case 1: broken.dev.writev = NULL; break;
		case 2: broken.dev.unmap = NULL; break;
		case 3: broken.dev.compress = NULL; break;
		default: broken.dev.decompress = NULL;
		}
		expect_init_fails(&broken, &p, dir, dir, -EINVAL);
		mem_dev_free(&broken);
	}
	mem_dev_free(&d);
	remove_tree(dir);
}

static void init_no_dev_done(void *arg, struct spdk_reduce_vol *vol, int status)
{
	*(int *)arg = vol == NULL ? status : 1;
}

void test_init_os_errors(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	char dir[64], missing[128], path[256];
	int status = 0;

	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, 512, blockcnt_for_chunks(CHUNKS), deferred);
	default_params(&p);

	spdk_reduce_vol_init(&p, NULL, dir, init_no_dev_done, &status);
	CHECK_EQ(status, -EINVAL);

	snprintf(missing, sizeof(missing), "%s/missing", dir);
	expect_init_fails(&d, &p, dir, missing, -ENOENT);

	/* A pm file already there (a chosen uuid names it): EEXIST, and it is untouched. */
	default_params(&p);
	for (int i = 0; i < 16; i++) {
		p.uuid.u.raw[i] = (uint8_t)(0x10 + i);
	}
	snprintf(path, sizeof(path), "%s/10111213-1415-1617-1819-1a1b1c1d1e1f", dir);
	int fd = open(path, O_CREAT | O_WRONLY, 0644);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "keep", 4), 4);
	close(fd);
	struct spdk_reduce_vol *vol = NULL;
	CHECK_EQ(h_init(&d, &p, dir, &vol), -EEXIST);
	CHECK(vol == NULL);
	struct stat st;
	CHECK_EQ(stat(path, &st), 0);
	CHECK_EQ(st.st_size, 4);
	unlink(path);

	/* A directory we may not write to (root may write anywhere: skip then). */
	if (geteuid() != 0) {
		default_params(&p);
		chmod(dir, 0500);
		expect_init_fails(&d, &p, dir, dir, -EACCES);
		chmod(dir, 0700);
	}
	mem_dev_free(&d);
	remove_tree(dir);
}

static void rewrite_pm(const char *path, off_t offset, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY);
	CHECK(fd >= 0);
	CHECK_EQ(pwrite(fd, bytes, len, offset), (ssize_t)len);
	close(fd);
}

void test_load_errors(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], pm[256], saved[300];
	uint8_t buf[CHUNK];

	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, 512, blockcnt_for_chunks(CHUNKS), deferred);
	default_params(&p);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ); /* zeroed device: no signature */
	CHECK(vol == NULL);
	CHECK_EQ(h_init(&d, &p, dir, &vol), 0);
	if (!vol) {
		goto out;
	}
	fill_data(buf, sizeof(buf), 3);
	CHECK_EQ(h_write(&d, vol, buf, 0, BPC), 0);
	snprintf(pm, sizeof(pm), "%s", spdk_reduce_vol_get_pm_path(vol));
	snprintf(saved, sizeof(saved), "%s.saved", pm);
	CHECK_EQ(h_unload(&d, vol), 0);

	/* The pm file missing. */
	CHECK_EQ(rename(pm, saved), 0);
	vol = NULL;
	CHECK(h_load(&d, &vol) < 0);
	CHECK(vol == NULL);
	CHECK_EQ(rename(saved, pm), 0);

	struct stat st;
	CHECK_EQ(stat(pm, &st), 0);
	off_t size = st.st_size;
	uint8_t word[8], orig[8];
	int fd = open(pm, O_RDONLY);
	/* Wrong size, a superblock copy that differs, a map entry out of range. */
	CHECK_EQ(truncate(pm, size - 512), 0);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	CHECK_EQ(truncate(pm, size), 0);
	CHECK_EQ(pread(fd, orig, 8, 4096 + 8), 8); /* chunk 1's logical map entry */
	memset(word, 0x01, sizeof(word));
	rewrite_pm(pm, 4096 + 8, word, 8);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	rewrite_pm(pm, 4096 + 8, orig, 8);
	CHECK_EQ(pread(fd, orig, 8, 8), 8);
	rewrite_pm(pm, 8, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	rewrite_pm(pm, 8, orig, 8);
	close(fd);
	/* Repaired: it loads, with its data. */
	CHECK_EQ(h_load(&d, &vol), 0);
	if (vol) {
		uint8_t got[CHUNK];
		CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
		CHECK(memcmp(got, buf, CHUNK) == 0);
		CHECK_EQ(h_unload(&d, vol), 0);
	}
	/* Garbage in the device's superblock. */
	d.image[9] ^= 0xFF;
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	d.image[9] ^= 0xFF;
out:
	mem_dev_free(&d);
	remove_tree(dir);
}

static void collect(void *arg, int status)
{
	*(int *)arg = status;
}

void test_io_einval(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t buf[CHUNK], scratch[1024];
	struct iovec iov = {scratch, 512};

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0);
	if (!vol) {
		goto out;
	}
	uint64_t blocks = p.vol_size / 512;
	fill_data(buf, sizeof(buf), 1);
	CHECK_EQ(h_write(&d, vol, buf, 0, BPC), 0);
	uint64_t units = spdk_reduce_vol_get_info(vol)->allocated_io_units;
	for (int write = 0; write < 2; write++) {
		CHECK_EQ(h_io(&d, vol, write, NULL, 0, 5, 0), 0); /* length 0 */
		CHECK_EQ(h_io(&d, vol, write, &iov, 1, 5, 0), 0);
		iov.iov_len = 2 * 512;
		CHECK_EQ(h_io(&d, vol, write, &iov, 1, BPC - 1, 2), -EINVAL); /* crosses a chunk */
		iov.iov_len = 512;
		CHECK_EQ(h_io(&d, vol, write, &iov, 1, 0, 2), -EINVAL); /* iov too short */
		iov.iov_len = 1024;
		CHECK_EQ(h_io(&d, vol, write, &iov, 1, 0, 1), -EINVAL); /* iov too long */
		iov.iov_len = 512;
		CHECK_EQ(h_io(&d, vol, write, &iov, 1, blocks, 1), -EINVAL); /* past the end */
		CHECK_EQ(h_io(&d, vol, write, &iov, 1, UINT64_MAX, 1), -EINVAL);
		CHECK_EQ(h_io(&d, vol, write, NULL, 1, 0, 1), -EINVAL);
		CHECK_EQ(h_io(&d, vol, write, &iov, -1, 0, 1), -EINVAL);
		struct iovec null_base = {NULL, 512};
		CHECK_EQ(h_io(&d, vol, write, &null_base, 1, 0, 1), -EINVAL);
		CHECK_EQ(h_io(&d, vol, write, &iov, 1, blocks - 1, 1), 0); /* the last block */
	}
	int status = 1;
	spdk_reduce_vol_readv(NULL, &iov, 1, 0, 1, collect, &status);
	CHECK_EQ(status, -EINVAL);
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->allocated_io_units, units + 1);
	uint8_t got[CHUNK];
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
	CHECK(memcmp(got, buf, CHUNK) == 0);
	CHECK_EQ(h_unload(&d, vol), 0);
out:
	mem_dev_free(&d);
	remove_tree(dir);
}

/* A volume full of incompressible data is rewritten over and over, many writes in
 * flight: the extra chunks always leave room, so nothing fails (the original aborted
 * when its bit arrays ran out). The pm-limited -ENOSPC is test_undersized_pm. */
void test_volume_full(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	int rounds = small_scale() ? 2 : 4, status[CHUNKS];
	uint8_t *bufs = malloc((size_t)CHUNKS * CHUNK), got[CHUNK];
	struct iovec iov[CHUNKS];

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0);
	for (int r = 0; r < rounds && vol; r++) {
		for (int c = 0; c < CHUNKS; c++) {
			uint64_t s = (uint64_t)(r * 1000 + c) * 2654435761u | 1;
			for (int i = 0; i < CHUNK; i++) {
				bufs[(size_t)c * CHUNK + i] = (uint8_t)rng_next(&s);
			}
			iov[c] = (struct iovec){bufs + (size_t)c * CHUNK, CHUNK};
			status[c] = 1;
			spdk_reduce_vol_writev(vol, &iov[c], 1, (uint64_t)c * BPC, BPC, collect,
					       &status[c]);
		}
		mem_dev_poll_all(&d);
		for (int c = 0; c < CHUNKS; c++) {
			CHECK_EQ(status[c], 0);
		}
		CHECK_EQ(spdk_reduce_vol_get_info(vol)->allocated_io_units, CHUNKS * 4);
	}
	for (int c = 0; c < CHUNKS && vol; c++) {
		CHECK_EQ(h_read(&d, vol, got, (uint64_t)c * BPC, BPC), 0);
		CHECK(memcmp(got, bufs + (size_t)c * CHUNK, CHUNK) == 0);
	}
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	mem_dev_free(&d);
	remove_tree(dir);
	free(bufs);
}

void test_backing_errors(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t buf[CHUNK], other[CHUNK], got[CHUNK];

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0);
	if (!vol) {
		goto out;
	}
	memset(buf, 'a', sizeof(buf));
	fill_data(other, sizeof(other), 11);
	CHECK_EQ(h_write(&d, vol, buf, 0, BPC), 0);
	uint64_t units = spdk_reduce_vol_get_info(vol)->allocated_io_units;

	mem_dev_fail_next(&d, OP_WRITE, -ENXIO);
	CHECK_EQ(h_write(&d, vol, other, 0, BPC), -ENXIO);
	mem_dev_fail_next(&d, OP_READ, -EREMOTEIO);
	CHECK_EQ(h_write(&d, vol, other, 2, 1), -EREMOTEIO); /* the RMW's read */
	mem_dev_fail_next(&d, OP_READ, -ENODATA);
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), -ENODATA);
	mem_dev_fail_next(&d, OP_DECOMPRESS, -EINVAL);
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), -EIO);
	/* Nothing leaked, nothing changed, no stale error. */
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->allocated_io_units, units);
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
	CHECK(memcmp(got, buf, CHUNK) == 0);
	/* A failed compress stores the chunk raw: the write succeeds. */
	mem_dev_fail_next(&d, OP_COMPRESS, -ENOMEM);
	CHECK_EQ(h_write(&d, vol, buf, BPC, BPC), 0);
	CHECK_EQ(spdk_reduce_vol_get_info(vol)->allocated_io_units, units + 4);
	CHECK_EQ(h_read(&d, vol, got, BPC, BPC), 0);
	CHECK(memcmp(got, buf, CHUNK) == 0);
	CHECK_EQ(h_check(&d, vol, NULL), 0);
	/* Stored data damaged behind the volume's back (chunk 0's frame, in the first io
	 * unit after the 8 KiB of metadata): -EIO, never wrong data; the checker says so. */
	d.image[2 * 4096 + 10] ^= 0x40;
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), -EIO);
	struct reduce_vol_check_report r;
	CHECK_EQ(h_check(&d, vol, &r), -EIO);
	CHECK_EQ(r.problems, 1);
	CHECK(strstr(r.first_problem, "chunk 0") != NULL);
	d.image[2 * 4096 + 10] ^= 0x40;
	CHECK_EQ(h_unload(&d, vol), 0);
out:
	mem_dev_free(&d);
	remove_tree(dir);
}

void test_unload_busy(int deferred)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t buf[CHUNK];
	struct iovec iov = {buf, CHUNK};
	int write_status = 1, unload_status = 1;

	CHECK_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0);
	if (!vol) {
		goto out;
	}
	fill_data(buf, sizeof(buf), 2);
	spdk_reduce_vol_writev(vol, &iov, 1, 0, BPC, collect, &write_status);
	spdk_reduce_vol_unload(vol, collect, &unload_status);
	/* Deferred: the write is still out, so -EBUSY; immediate: it finished, so 0. */
	CHECK_EQ(unload_status, deferred ? -EBUSY : 0);
	mem_dev_poll_all(&d);
	CHECK_EQ(write_status, 0);
	if (deferred) {
		CHECK_EQ(h_unload(&d, vol), 0);
	}
out:
	mem_dev_free(&d);
	remove_tree(dir);
}
