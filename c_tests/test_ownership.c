/* One owner per volume, destroy all or nothing, the forced destroy, pm paths as bytes
 * and the room a geometry must leave (docs/DESIGN.md, the error contract's ownership
 * rows), from C with real pm files.
 *
 * A second handle on a volume comes two ways: the same backing device object again
 * (refused by the library's registry of devices in use), or another device object
 * over the same bytes (refused by the pm file's lock, as another process would be; one
 * test does it from a forked child). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define CHUNKS 16
#define BPC DEF_BPC
#define CHUNK DEF_CHUNK
#define HEADER 8192

struct done {
	int done;
	int status;
	struct spdk_reduce_vol *vol;
};

static void op_done(void *arg, int status)
{
	struct done *w = arg;
	CHECK(!w->done);
	w->status = status;
	w->done = 1;
}

static int h_destroy_force(struct mem_dev *d)
{
	struct done w = {0};
	reduce_vol_destroy_force(&d->dev, op_done, &w);
	return poll_until(d, &w.done) ? -ETIMEDOUT : w.status;
}

/* A second device object over `d`'s bytes: what another process opening the same disk
 * would have. Release with twin_free. */
static void twin_of(struct mem_dev *twin, struct mem_dev *d)
{
	mem_dev_init(twin, d->dev.blocklen, d->dev.blockcnt, d->deferred);
	free(twin->image);
	twin->image = d->image;
}

static void twin_free(struct mem_dev *twin)
{
	twin->image = NULL;
	mem_dev_free(twin);
}

static void write_chunk(struct mem_dev *d, struct spdk_reduce_vol *vol, uint64_t chunk,
			uint64_t seed)
{
	uint8_t buf[CHUNK];
	fill_data(buf, sizeof(buf), seed);
	CHECK_EQ(h_write(d, vol, buf, chunk * BPC, BPC), 0);
}

static int chunk_is(struct mem_dev *d, struct spdk_reduce_vol *vol, uint64_t chunk,
		    uint64_t seed)
{
	uint8_t want[CHUNK], got[CHUNK];
	fill_data(want, sizeof(want), seed);
	return h_read(d, vol, got, chunk * BPC, BPC) == 0 && memcmp(got, want, CHUNK) == 0;
}

static int signed_volume(struct mem_dev *d)
{
	return memcmp(d->image, "SPDKREDU", 8) == 0;
}

TEST(ownership_second_load_is_ebusy)
{
	struct mem_dev d, twin;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL, *other = (void *)1;
	char dir[64];
	uint8_t header[HEADER];
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	write_chunk(&d, vol, 1, 11);
	memcpy(header, d.image, HEADER);
	twin_of(&twin, &d);

	/* The same device object, then another one over the same bytes. */
	CHECK_EQ(h_load(&d, &other), -EBUSY);
	CHECK(other == NULL);
	other = (void *)1;
	CHECK_EQ(h_load(&twin, &other), -EBUSY);
	CHECK(other == NULL);
	CHECK(memcmp(d.image, header, HEADER) == 0);

	/* The first handle goes on; after its unload the volume loads through either. */
	write_chunk(&d, vol, 2, 12);
	CHECK(chunk_is(&d, vol, 1, 11) && chunk_is(&d, vol, 2, 12));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&twin, &other), 0, twin_out);
	CHECK(chunk_is(&twin, other, 1, 11) && chunk_is(&twin, other, 2, 12));
	CHECK_EQ(h_load(&d, &vol), -EBUSY);
	CHECK_EQ(h_unload(&twin, other), 0);
	CHECK_EQ(h_load(&d, &vol), 0);
twin_out:
	twin_free(&twin);
out:
	rig_close(&d, vol, dir);
}

TEST(ownership_init_over_a_loaded_volume_is_ebusy)
{
	struct mem_dev d, twin;
	struct spdk_reduce_vol_params p, again;
	struct spdk_reduce_vol *vol = NULL, *other = (void *)1;
	char dir[64];
	uint8_t header[HEADER];
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	write_chunk(&d, vol, 3, 13);
	memcpy(header, d.image, HEADER);
	twin_of(&twin, &d);

	default_params(&again);
	CHECK_EQ(h_init(&d, &again, dir, &other), -EBUSY);
	CHECK(other == NULL);
	CHECK_EQ(again.vol_size, 0); /* refused before anything, params included */
	default_params(&again);
	other = (void *)1;
	CHECK_EQ(h_init(&twin, &again, dir, &other), -EBUSY);
	CHECK(other == NULL);
	CHECK_EQ(count_files(dir), 1);
	CHECK(memcmp(d.image, header, HEADER) == 0);
	CHECK(chunk_is(&d, vol, 3, 13));

	/* Unloaded, it is overwritten as in the original (its pm file stays). */
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	default_params(&again);
	CHECK_EQ(h_init(&twin, &again, dir, &other), 0);
	CHECK_EQ(count_files(dir), 2);
	CHECK_EQ(h_unload(&twin, other), 0);
	twin_free(&twin);
	CHECK_EQ(h_load(&d, &vol), 0);
	CHECK(vol && memcmp(spdk_reduce_vol_get_uuid(vol), &again.uuid, 16) == 0);
out:
	rig_close(&d, vol, dir);
}

TEST(ownership_destroy_of_a_loaded_volume_is_ebusy)
{
	struct mem_dev d, twin;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t header[HEADER];
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	write_chunk(&d, vol, 4, 14);
	memcpy(header, d.image, HEADER);
	twin_of(&twin, &d);

	CHECK_EQ(h_destroy(&d), -EBUSY);
	CHECK_EQ(h_destroy(&twin), -EBUSY);
	CHECK_EQ(h_destroy_force(&d), -EBUSY);
	CHECK_EQ(h_destroy_force(&twin), -EBUSY);
	CHECK(memcmp(d.image, header, HEADER) == 0);
	CHECK_EQ(count_files(dir), 1);

	/* Writes after the refused destroys are kept. */
	write_chunk(&d, vol, 5, 15);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&twin, &vol), 0, twin_out);
	CHECK(chunk_is(&twin, vol, 4, 14) && chunk_is(&twin, vol, 5, 15));
	CHECK_EQ(h_unload(&twin, vol), 0);
	vol = NULL;
	CHECK_EQ(h_destroy(&twin), 0);
	CHECK(!signed_volume(&d));
	CHECK_EQ(count_files(dir), 0);
twin_out:
	twin_free(&twin);
out:
	rig_close(&d, vol, dir);
}

static void opened(void *arg, struct spdk_reduce_vol *vol, int status)
{
	struct done *w = arg;
	CHECK(!w->done);
	w->vol = vol;
	w->status = status;
	w->done = 1;
}

/* Two inits on one device at once (in deferred mode the first is still running when
 * the second comes): one volume, one pm file. A load or destroy meanwhile is refused
 * the same way. */
TEST(ownership_concurrent_inits_make_one_volume)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p1, p2;
	struct done first = {0}, second = {0}, load = {0}, destroy = {0};
	char dir[64];
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	default_params(&p1);
	default_params(&p2);
	spdk_reduce_vol_init(&p1, &d.dev, dir, opened, &first);
	spdk_reduce_vol_init(&p2, &d.dev, dir, opened, &second);
	spdk_reduce_vol_load(&d.dev, opened, &load);
	spdk_reduce_vol_destroy(&d.dev, op_done, &destroy);
	/* The refusals come at once, inside their calls. */
	CHECK(second.done && second.status == -EBUSY && second.vol == NULL);
	CHECK(load.done && load.status == -EBUSY && load.vol == NULL);
	CHECK(destroy.done && destroy.status == -EBUSY);
	CHECK_EQ(p2.vol_size, 0);
	CHECK_EQ(poll_until(&d, &first.done), 0);
	CHECK_EQ(first.status, 0);
	CHECK_EQ(count_files(dir), 1);
	rig_close(&d, first.vol, dir);
}

/* A device in use is free again before the callback that ends its use runs. */
struct reopen {
	struct mem_dev *d;
	struct done first, second;
};

static void load_again(void *arg, struct spdk_reduce_vol *vol, int status)
{
	struct reopen *r = arg;
	r->second.vol = vol;
	r->second.status = status;
	r->second.done = 1;
}

static void unloaded_then_load(void *arg, int status)
{
	struct reopen *r = arg;
	r->first.status = status;
	r->first.done = 1;
	spdk_reduce_vol_load(&r->d->dev, load_again, r);
}

static void loaded_then_load(void *arg, struct spdk_reduce_vol *vol, int status)
{
	struct reopen *r = arg;
	r->first.vol = vol;
	r->first.status = status;
	r->first.done = 1;
	spdk_reduce_vol_load(&r->d->dev, load_again, r);
}

TEST(ownership_device_claims_end_before_callbacks)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);

	/* Unload's callback may load the volume again. */
	struct reopen r = {.d = &d};
	spdk_reduce_vol_unload(vol, unloaded_then_load, &r);
	vol = NULL;
	CHECK_EQ(poll_until(&d, &r.second.done), 0);
	CHECK_EQ(r.first.status, 0);
	CHECK_EQ(r.second.status, 0);
	vol = r.second.vol;

	/* While a load's callback holds a new volume, the device is in use. */
	CHECK_EQ(h_unload(&d, vol), 0);
	struct reopen l = {.d = &d};
	spdk_reduce_vol_load(&d.dev, loaded_then_load, &l);
	CHECK_EQ(poll_until(&d, &l.second.done), 0);
	CHECK_EQ(l.first.status, 0);
	CHECK_EQ(l.second.status, -EBUSY);
	CHECK(l.second.vol == NULL);
	vol = l.first.vol;

	/* A failed load or destroy leaves the device free. */
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	memset(d.image, 0, 8);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	CHECK_EQ(h_destroy(&d), -EILSEQ);
	CHECK_EQ(h_destroy_force(&d), -EILSEQ);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
out:
	rig_close(&d, vol, dir);
}

/* Sets or clears the immutable attribute of `dir` (chattr +i / -i). */
static int set_immutable(const char *dir, int on)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	int flags, rc = -1;
	if (fd < 0) {
		return -1;
	}
	if (ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
		flags = on ? flags | FS_IMMUTABLE_FL : flags & ~FS_IMMUTABLE_FL;
		rc = ioctl(fd, FS_IOC_SETFLAGS, &flags);
	}
	close(fd);
	return rc;
}

TEST(ownership_destroy_that_cannot_remove_the_pm_file_changes_nothing)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	uint8_t header[HEADER];
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	write_chunk(&d, vol, 6, 16);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	memcpy(header, d.image, HEADER);
	if (set_immutable(dir, 1) != 0) {
		fprintf(stderr, "    [%s] cannot make %s immutable here: skipped\n", g_test_mode, dir);
		goto out;
	}
	CHECK_EQ(h_destroy(&d), -EPERM);
	CHECK(memcmp(d.image, header, HEADER) == 0);
	CHECK_EQ(h_destroy(&d), -EPERM); /* never "no volume here" */
	CHECK_EQ(h_destroy_force(&d), -EPERM);
	CHECK(memcmp(d.image, header, HEADER) == 0);
	CHECK_EQ(count_files(dir), 1);
	if (h_load(&d, &vol) == 0) {
		CHECK(chunk_is(&d, vol, 6, 16));
		CHECK_EQ(h_unload(&d, vol), 0);
	} else {
		CHECK(!"the volume loads after the failed destroy");
	}
	vol = NULL;
	CHECK_EQ(set_immutable(dir, 0), 0);
	CHECK_EQ(h_destroy(&d), 0);
	CHECK(!signed_volume(&d));
	CHECK_EQ(count_files(dir), 0);
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
out:
	set_immutable(dir, 0);
	rig_close(&d, vol, dir);
}

TEST(ownership_destroy_force)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], pm[4096];
	REQUIRE_EQ(rig_open(&d, &p, dir, sizeof(dir), CHUNKS, deferred, &vol), 0, out);
	snprintf(pm, sizeof(pm), "%s", spdk_reduce_vol_get_pm_path(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;

	/* pm file missing: destroy refuses as load does, the forced one clears. */
	CHECK_EQ(unlink(pm), 0);
	CHECK_EQ(h_destroy(&d), -ENOENT);
	CHECK(signed_volume(&d));
	CHECK_EQ(h_destroy_force(&d), 0);
	CHECK(!signed_volume(&d));
	CHECK_EQ(h_load(&d, &vol), -EILSEQ);
	CHECK_EQ(h_destroy_force(&d), -EILSEQ);

	/* pm file damaged (cut short): removed with the signature. */
	default_params(&p);
	REQUIRE_EQ(h_init(&d, &p, dir, &vol), 0, out);
	snprintf(pm, sizeof(pm), "%s", spdk_reduce_vol_get_pm_path(vol));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(truncate(pm, 100), 0);
	CHECK_EQ(h_destroy(&d), -EILSEQ);
	CHECK_EQ(count_files(dir), 1);
	CHECK_EQ(h_destroy_force(&d), 0);
	CHECK_EQ(count_files(dir), 0);
	CHECK(!signed_volume(&d));

	/* Without a callback the call does nothing. */
	reduce_vol_destroy_force(&d.dev, NULL, NULL);
	CHECK_EQ(d.pending, 0);
out:
	rig_close(&d, vol, dir);
}

static void status_of(void *arg, int status)
{
	*(int *)arg = status;
}

TEST_ONCE(ownership_destroy_force_null_device)
{
	int status = 1;
	(void)deferred;
	reduce_vol_destroy_force(NULL, status_of, &status);
	CHECK_EQ(status, -EINVAL);
}

TEST(ownership_pm_dir_is_bytes)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], odd[128];
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	snprintf(odd, sizeof(odd), "%s/pm-\xff\xfe-\x80", dir);
	CHECK_EQ(mkdir(odd, 0700), 0);
	default_params(&p);
	REQUIRE_EQ(h_init(&d, &p, odd, &vol), 0, out);
	const char *path = spdk_reduce_vol_get_pm_path(vol);
	size_t n = strlen(odd);
	CHECK(strncmp(path, odd, n) == 0 && path[n] == '/' && strlen(path) == n + 37);
	CHECK(memcmp(d.image + 4096, path, strlen(path) + 1) == 0);
	struct stat st;
	CHECK_EQ(stat(path, &st), 0);
	write_chunk(&d, vol, 0, 20);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	REQUIRE_EQ(h_load(&d, &vol), 0, out);
	CHECK(strncmp(spdk_reduce_vol_get_pm_path(vol), odd, n) == 0);
	CHECK(chunk_is(&d, vol, 0, 20));
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(h_destroy(&d), 0);
	CHECK_EQ(count_files(odd), 0);
out:
	rig_close(&d, vol, dir);
}

TEST(ownership_relative_pm_dir_is_made_absolute)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64], cwd[4096], want[256];
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	if (!getcwd(cwd, sizeof(cwd)) || chdir(dir) != 0 || mkdir("rel", 0700) != 0) {
		CHECK(!"could not set up the working directory");
		goto out;
	}
	default_params(&p);
	int rc = h_init(&d, &p, "rel", &vol);
	snprintf(want, sizeof(want), "%s/rel/", dir);
	/* A later load does not depend on the working directory. */
	CHECK_EQ(chdir("/"), 0);
	REQUIRE_EQ(rc, 0, back);
	CHECK(strncmp(spdk_reduce_vol_get_pm_path(vol), want, strlen(want)) == 0);
	CHECK_EQ(h_unload(&d, vol), 0);
	vol = NULL;
	CHECK_EQ(h_load(&d, &vol), 0);
	if (vol) {
		CHECK(strncmp(spdk_reduce_vol_get_pm_path(vol), want, strlen(want)) == 0);
	}
back:
	CHECK_EQ(chdir(cwd), 0);
out:
	rig_close(&d, vol, dir);
}

/* The volume loaded in a child process: the lock holds across processes, and dies
 * with the child. The device's bytes are shared memory, so parent and child see the
 * same disk. */
TEST(ownership_lock_spans_processes_and_dies_with_them)
{
	struct mem_dev d;
	struct spdk_reduce_vol_params p;
	struct spdk_reduce_vol *vol = NULL;
	char dir[64];
	int ready[2] = {-1, -1};
	make_tmpdir(dir, sizeof(dir));
	mem_dev_init(&d, DEF_BLOCKLEN, blockcnt_for_chunks(CHUNKS), deferred);
	size_t bytes = d.dev.blockcnt * d.dev.blocklen;
	uint8_t *shared = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
			       -1, 0);
	if (shared == MAP_FAILED || pipe(ready) != 0) {
		CHECK(!"mmap or pipe failed");
		goto out;
	}
	free(d.image);
	d.image = shared;
	default_params(&p);
	fflush(NULL);
	pid_t child = fork();
	if (child < 0) {
		CHECK(!"fork failed");
		goto out;
	}
	if (child == 0) {
		/* The child: init, write, report, then wait to be killed with the volume
		 * loaded, as a crash would leave it. */
		char status = 1;
		if (h_init(&d, &p, dir, &vol) == 0) {
			uint8_t buf[CHUNK];
			fill_data(buf, sizeof(buf), 30);
			status = h_write(&d, vol, buf, 7 * BPC, BPC) == 0 ? 0 : 2;
		}
		if (write(ready[1], &status, 1) != 1) {
			_exit(3);
		}
		for (;;) {
			pause();
		}
	}
	char status = 9;
	CHECK_EQ(read(ready[0], &status, 1), 1);
	REQUIRE_EQ(status, 0, reap);
	CHECK(signed_volume(&d));
	CHECK_EQ(h_load(&d, &vol), -EBUSY);
	CHECK_EQ(h_destroy(&d), -EBUSY);
	CHECK_EQ(h_destroy_force(&d), -EBUSY);
	default_params(&p);
	CHECK_EQ(h_init(&d, &p, dir, &vol), -EBUSY);
	CHECK_EQ(count_files(dir), 1);
reap:
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	if (status == 0) {
		/* The child died holding the volume: no lock is left behind. */
		REQUIRE_EQ(h_load(&d, &vol), 0, out);
		CHECK(chunk_is(&d, vol, 7, 30));
	}
out:
	close(ready[0]);
	close(ready[1]);
	if (vol) {
		CHECK_EQ(h_unload(&d, vol), 0);
		vol = NULL;
	}
	if (d.image == shared) {
		munmap(shared, bytes);
		d.image = NULL;
	}
	rig_close(&d, vol, dir);
}

/* io unit = chunk: at 64 bytes or less the metadata's io units eat into the room the
 * volume reports (at 64 a full volume could overwrite nothing, at 32 only 384 of 512
 * chunks could be written). At 65 one io unit is left: every chunk can be written and
 * overwritten. */
TEST(ownership_init_refuses_geometries_without_room)
{
	static const uint32_t sizes[] = {16, 32, 64, 65};
	char dir[64];
	make_tmpdir(dir, sizeof(dir));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint32_t io = sizes[i];
		struct mem_dev d;
		struct spdk_reduce_vol_params p = {
			.backing_io_unit_size = io, .logical_block_size = 1, .chunk_size = io};
		struct spdk_reduce_vol *vol = NULL;
		mem_dev_init(&d, 1, (512 + 128) * (uint64_t)io, deferred);
		int rc = h_init(&d, &p, dir, &vol);
		if (io <= 64) {
			CHECK_EQ(rc, -EINVAL);
			CHECK_EQ(count_files(dir), 0);
			CHECK_EQ(d.count[OP_WRITE], 0);
			mem_dev_free(&d);
			continue;
		}
		CHECK_EQ(rc, 0);
		/* Every chunk takes incompressible data, and can be overwritten after. */
		uint8_t buf[128];
		for (uint64_t round = 0; vol && round < 2; round++) {
			for (uint64_t c = 0; c < 512; c++) {
				fill_random(buf, io, c + 1000 * round);
				struct iovec iov = {.iov_base = buf, .iov_len = io};
				CHECK_EQ(h_io(&d, vol, 1, &iov, 1, c * io, io), 0);
			}
		}
		if (vol) {
			CHECK_EQ(h_unload(&d, vol), 0);
		}
		mem_dev_free(&d);
	}
	remove_tree(dir);
}
