/* Basic lifecycle from C: init -> write -> read back -> unload -> load -> read back;
 * the getters (params, uuid, pm path, info, print_info); the on-disk layout that init
 * leaves (docs/DESIGN.md, on-disk format); destroy. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"

#define CHUNKS 64
#define BPC DEF_BPC
#define CHUNK DEF_CHUNK

static void uuid_string(const struct spdk_uuid *u, char *out)
{
	const uint8_t *r = u->u.raw;
	sprintf(out,
		"%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
		r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13],
		r[14], r[15]);
}

static int all_zero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (b[i]) {
			return 0;
		}
	}
	return 1;
}

/* print_info writes to stderr: keep the test output readable. */
static void quiet_print_info(struct spdk_reduce_vol *vol)
{
	fflush(stderr);
	int saved = dup(2), null = open("/dev/null", O_WRONLY);
	if (saved >= 0 && null >= 0) {
		dup2(null, 2);
	}
	spdk_reduce_vol_print_info(vol);
	spdk_reduce_vol_print_info(NULL);
	fflush(stderr);
	if (saved >= 0) {
		dup2(saved, 2);
		close(saved);
	}
	if (null >= 0) {
		close(null);
	}
}

TEST(basic_persistence)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t *want = malloc(CHUNK * 4), *got = malloc(CHUNK * 4);

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	CHECK_EQ(p.vol_size, (uint64_t)CHUNKS * CHUNK);

	fill_data(want, CHUNK * 4, 42);
	fill_random(want + CHUNK, CHUNK, 43);
	/* A full chunk, partial writes into fresh chunks, a read over several iovecs. */
	CHECK_EQ(h_write(&d, vol, want, 0, BPC), 0);
	CHECK_EQ(h_write(&d, vol, want + CHUNK, BPC + 3, 5), 0);
	CHECK_EQ(h_write(&d, vol, want + 2 * CHUNK, 2 * BPC + 31, 1), 0);
	struct iovec iov[3] = {{got, 1024}, {got + 1024, 512}, {got + 1536, CHUNK - 1536}};
	CHECK_EQ(h_io(&d, vol, 0, iov, 3, 0, BPC), 0);
	CHECK(memcmp(got, want, CHUNK) == 0);
	CHECK_EQ(h_read(&d, vol, got, BPC + 3, 5), 0);
	CHECK(memcmp(got, want + CHUNK, 5 * 512) == 0);
	/* The rest of a chunk written in part reads as zeros. */
	CHECK_EQ(h_read(&d, vol, got, BPC, BPC), 0);
	CHECK(all_zero(got, 3 * 512));
	CHECK(memcmp(got + 3 * 512, want + CHUNK, 5 * 512) == 0);
	CHECK(all_zero(got + 8 * 512, CHUNK - 8 * 512));
	/* A write over several iovecs, one of them empty. */
	struct iovec wiov[3] = {{want + 3 * CHUNK, 512}, {want, 0}, {want + 3 * CHUNK + 512, 1536}};
	CHECK_EQ(h_io(&d, vol, 1, wiov, 3, 5 * BPC + 8, 4), 0);
	CHECK_EQ(h_read(&d, vol, got, 5 * BPC + 8, 4), 0);
	CHECK(memcmp(got, want + 3 * CHUNK, 2048) == 0);
	CHECK(h_units(vol) > 0);

	struct reduce_vol_check_report r;
	CHECK_EQ(h_check(&d, vol, &r), 0);
	CHECK_EQ(r.chunks_in_use, 4);
	CHECK_EQ(r.problems, 0);
	uint64_t units = h_units(vol);

	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	CHECK(memcmp(spdk_reduce_vol_get_uuid(vol), &p.uuid, 16) == 0);
	/* Field by field: the 4 padding bytes @28 are unspecified in memory. */
	const struct spdk_reduce_vol_params *lp = spdk_reduce_vol_get_params(vol);
	CHECK(memcmp(&lp->uuid, &p.uuid, 16) == 0);
	CHECK_EQ(lp->backing_io_unit_size, p.backing_io_unit_size);
	CHECK_EQ(lp->logical_block_size, p.logical_block_size);
	CHECK_EQ(lp->chunk_size, p.chunk_size);
	CHECK_EQ(lp->vol_size, p.vol_size);
	CHECK_EQ(h_units(vol), units);
	memset(got, 0xEE, CHUNK);
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
	CHECK(memcmp(got, want, CHUNK) == 0);
	CHECK_EQ(h_read(&d, vol, got, BPC + 3, 5), 0);
	CHECK(memcmp(got, want + CHUNK, 5 * 512) == 0);
	CHECK_EQ(h_read(&d, vol, got, 2 * BPC + 31, 1), 0);
	CHECK(memcmp(got, want + 2 * CHUNK, 512) == 0);
	CHECK_EQ(h_read(&d, vol, got, 5 * BPC + 8, 4), 0);
	CHECK(memcmp(got, want + 3 * CHUNK, 2048) == 0);
	/* Never written: zeros (and the last block of the volume too). */
	memset(got, 0xEE, CHUNK);
	CHECK_EQ(h_read(&d, vol, got, 10 * BPC, BPC), 0);
	CHECK(all_zero(got, CHUNK));
	memset(got, 0xEE, 512);
	CHECK_EQ(h_read(&d, vol, got, (uint64_t)CHUNKS * BPC - 1, 1), 0);
	CHECK(all_zero(got, 512));
out:
	rig_close(&d, vol, dir);
	free(want);
	free(got);
}

TEST(basic_getters_and_layout)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], uuid[40], want_path[128];
	uint8_t zero[16] = {0};

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	/* A zero uuid was replaced by a random version-4 uuid, written back to params. */
	CHECK(memcmp(&p.uuid, zero, 16) != 0);
	CHECK_EQ(p.uuid.u.raw[6] >> 4, 4);
	CHECK_EQ(p.uuid.u.raw[8] & 0xC0, 0x80);
	CHECK(memcmp(spdk_reduce_vol_get_uuid(vol), &p.uuid, 16) == 0);
	const struct spdk_reduce_vol_params *gp = spdk_reduce_vol_get_params(vol);
	CHECK(gp != NULL);
	if (gp) {
		CHECK_EQ(gp->backing_io_unit_size, DEF_IO_UNIT);
		CHECK_EQ(gp->logical_block_size, DEF_BLOCKLEN);
		CHECK_EQ(gp->chunk_size, DEF_CHUNK);
		CHECK_EQ(gp->vol_size, (uint64_t)CHUNKS * CHUNK);
	}
	/* pm file: dir + "/" + lowercase uuid, mode 0600, the fixed-formula size. */
	uuid_string(&p.uuid, uuid);
	snprintf(want_path, sizeof(want_path), "%s/%s", dir, uuid);
	const char *pm = spdk_reduce_vol_get_pm_path(vol);
	CHECK(pm && strcmp(pm, want_path) == 0);
	struct stat st;
	CHECK_EQ(stat(want_path, &st), 0);
	CHECK_EQ(st.st_mode & 0777, 0600);
	/* 4096 + chunks*8 (rounded to 64) + (chunks+128)*(8 + 8*iou_per_chunk) (rounded). */
	CHECK_EQ(st.st_size, 4096 + 512 + (CHUNKS + 128) * 40);
	CHECK_EQ(count_files(dir), 1);
	/* Backing device: signature, params, path region; the pm file has the same
	 * superblock. */
	CHECK(memcmp(d.image, "SPDKREDU", 8) == 0);
	CHECK(memcmp(d.image + 8, &p, 40) == 0);
	CHECK(strcmp((const char *)d.image + 4096, want_path) == 0);
	int fd = open(want_path, O_RDONLY);
	uint8_t sb[4096];
	CHECK(fd >= 0 && pread(fd, sb, sizeof(sb), 0) == (ssize_t)sizeof(sb));
	CHECK(memcmp(sb, d.image, 4096) == 0);
	/* 48..64 is where later SPDK keeps comp_level/comp_algo: zeros here. */
	CHECK(all_zero(sb + 48, 16));
	if (fd >= 0) {
		close(fd);
	}
	/* Nothing written yet. */
	CHECK_EQ(h_units(vol), 0);
	quiet_print_info(vol);
	/* NULL handles. */
	CHECK(spdk_reduce_vol_get_uuid(NULL) == NULL);
	CHECK(spdk_reduce_vol_get_params(NULL) == NULL);
	CHECK(spdk_reduce_vol_get_pm_path(NULL) == NULL);
	CHECK(spdk_reduce_vol_get_info(NULL) == NULL);
out:
	rig_close(&d, vol, dir);
}

/* A chosen uuid is kept, and a pm_file_dir ending in '/' gets no second one. */
TEST(basic_chosen_uuid_and_trailing_slash)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], slash[80], want_path[128];

	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, 4096, (CHUNKS + 128) * 4, deferred);
	default_params(&p);
	p.logical_block_size = 4096;
	for (int i = 0; i < 16; i++) {
		p.uuid.u.raw[i] = (uint8_t)(0xA0 + i);
	}
	snprintf(slash, sizeof(slash), "%s/", dir);
	REQUIRE_EQ(h_init(&d, &p, slash, &vol), 0, out);
	snprintf(want_path, sizeof(want_path), "%s/a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf", dir);
	CHECK(strcmp(spdk_reduce_vol_get_pm_path(vol), want_path) == 0);
	CHECK_EQ(spdk_reduce_vol_get_uuid(vol)->u.raw[0], 0xA0);
	CHECK_EQ(spdk_reduce_vol_get_uuid(vol)->u.raw[15], 0xAF);
	CHECK_EQ(file_size(want_path), 4096 + 512 + (CHUNKS + 128) * 40);
	uint8_t buf[4096 * 4], got[4096 * 4];
	fill_data(buf, sizeof(buf), 9);
	CHECK_EQ(h_write(&d, vol, buf, 4, 4), 0);
	CHECK_EQ(h_write(&d, vol, buf, 9, 1), 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	CHECK_EQ(h_read(&d, vol, got, 4, 4), 0);
	CHECK(memcmp(got, buf, sizeof(buf)) == 0);
	CHECK_EQ(h_read(&d, vol, got, 9, 1), 0);
	CHECK(memcmp(got, buf, 4096) == 0);
out:
	rig_close(&d, vol, dir);
}

TEST(basic_destroy)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], pm[256];
	uint8_t buf[CHUNK];

	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	fill_data(buf, sizeof(buf), 1);
	CHECK_EQ(h_write(&d, vol, buf, 0, BPC), 0);
	snprintf(pm, sizeof(pm), "%s", spdk_reduce_vol_get_pm_path(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;

	CHECK_EQ(count_files(dir), 1);
	CHECK_EQ(h_destroy(&d), 0);
	/* The pm file is gone and the device no longer holds a volume. */
	CHECK_EQ(count_files(dir), 0);
	CHECK(access(pm, F_OK) != 0);
	CHECK(memcmp(d.image, "SPDKREDU", 8) != 0);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	CHECK(vol == NULL);
	CHECK_EQ(h_destroy(&d), -EILSEQ);
	/* A new volume can be made on the same device. */
	default_params(&p);
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, out);
	uint8_t got[CHUNK];
	CHECK_EQ(h_read(&d, vol, got, 0, BPC), 0);
	CHECK(all_zero(got, CHUNK));
out:
	rig_close(&d, vol, dir);
}

/* Destroy on a never-initialized device and with NULL arguments. */
TEST(basic_destroy_nothing)
{
	struct mem_dev d;
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(4), deferred);
	CHECK_EQ(h_destroy(&d), -EILSEQ);
	for (size_t i = 0; i < 4096; i++) {
		CHECK_EQ(d.image[i], 0);
		if (d.image[i]) {
			break;
		}
	}
	CHECK_EQ(d.count[OP_WRITE], 0);
	mem_dev_free(&d);
}
