/* Built by tests/integration/install.sh against a staged install, with nothing but
 * `pkg-config --cflags --libs reduce`: both headers resolve, and the installed library
 * initializes, writes, reads back, unloads, loads and destroys a volume on a RAM disk.
 *
 * Usage: installed PM_DIR */
#include <spdk/reduce.h>
#include <reduce.h> /* the same header, by its own name */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEV_BYTES (4u << 20)
#define CHUNK 16384

static uint8_t disk[DEV_BYTES];

static void ram_io(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		   uint64_t lba, struct spdk_reduce_vol_cb_args *args, int write)
{
	uint8_t *at = disk + lba * dev->blocklen;
	for (int i = 0; i < iovcnt; i++) {
		if (write) {
			memcpy(at, iov[i].iov_base, iov[i].iov_len);
		} else {
			memcpy(iov[i].iov_base, at, iov[i].iov_len);
		}
		at += iov[i].iov_len;
	}
	args->cb_fn(args->cb_arg, 0);
}

static void ram_readv(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		      uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	(void)lba_count;
	ram_io(dev, iov, iovcnt, lba, args, 0);
}

static void ram_writev(struct spdk_reduce_backing_dev *dev, struct iovec *iov, int iovcnt,
		       uint64_t lba, uint32_t lba_count, struct spdk_reduce_vol_cb_args *args)
{
	(void)lba_count;
	ram_io(dev, iov, iovcnt, lba, args, 1);
}

static void ram_unmap(struct spdk_reduce_backing_dev *dev, uint64_t lba, uint32_t lba_count,
		      struct spdk_reduce_vol_cb_args *args)
{
	memset(disk + lba * dev->blocklen, 0, (size_t)lba_count * dev->blocklen);
	args->cb_fn(args->cb_arg, 0);
}

static int status;
static struct spdk_reduce_vol *vol;

static void opened(void *ctx, struct spdk_reduce_vol *v, int rc)
{
	(void)ctx;
	vol = v;
	status = rc;
}

static void done(void *ctx, int rc)
{
	(void)ctx;
	status = rc;
}

static void check(const char *what)
{
	if (status != 0) {
		fprintf(stderr, "installed: %s: %s\n", what, strerror(-status));
		exit(1);
	}
}

static void read_back(const uint8_t *want)
{
	static uint8_t got[CHUNK];
	struct iovec iov = {got, CHUNK};
	spdk_reduce_vol_readv(vol, &iov, 1, 0, CHUNK / 512, done, NULL);
	check("read");
	if (memcmp(got, want, CHUNK) != 0) {
		fprintf(stderr, "installed: read back other bytes\n");
		exit(1);
	}
}

int main(int argc, char **argv)
{
	static struct spdk_reduce_backing_dev dev = {
		.readv = ram_readv,
		.writev = ram_writev,
		.unmap = ram_unmap,
		.compress = reduce_zstd_compress,
		.decompress = reduce_zstd_decompress,
		.blocklen = 512,
		.blockcnt = DEV_BYTES / 512,
	};
	struct spdk_reduce_vol_params params = {
		.backing_io_unit_size = 4096, .logical_block_size = 512, .chunk_size = CHUNK};
	static uint8_t data[CHUNK];

	if (argc != 2) {
		fprintf(stderr, "usage: installed PM_DIR\n");
		return 2;
	}
	for (size_t i = 0; i < CHUNK; i++) {
		data[i] = "installed with pkg-config "[i % 26];
	}
	spdk_reduce_vol_init(&params, &dev, argv[1], opened, NULL);
	check("init");
	struct iovec iov = {data, CHUNK};
	spdk_reduce_vol_writev(vol, &iov, 1, 0, CHUNK / 512, done, NULL);
	check("write");
	read_back(data);
	uint64_t units = spdk_reduce_vol_get_info(vol)->allocated_io_units;
	spdk_reduce_vol_unload(vol, done, NULL);
	check("unload");
	spdk_reduce_vol_load(&dev, opened, NULL);
	check("load");
	read_back(data);
	spdk_reduce_vol_unload(vol, done, NULL);
	check("unload");
	spdk_reduce_vol_destroy(&dev, done, NULL);
	check("destroy");
	printf("installed library: a chunk written, compressed to %llu io unit(s), read back "
	       "after a reload; volume destroyed\n",
	       (unsigned long long)units);
	return 0;
}
