/* zprobe: a threaded program using zlib (linked against the libz.so.1
 * the dynamic linker finds). Worker threads compress and uncompress a
 * buffer and call zError and compressBound in a loop; the main thread
 * answers commands on stdin:
 *   e CODE  -> zError(CODE)
 *   b LEN   -> compressBound(LEN) (LEN in decimal, unsigned long)
 *   w       -> what the workers last saw: zError(-7) and
 *              compressBound(ULONG_MAX - 1000)
 *   r       -> round trips the workers made, and how many failed
 *   v       -> zlibVersion()
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static const char *volatile last_err = "";
static volatile unsigned long last_bound;
static volatile unsigned long rounds, failures;

static void *worker(void *arg)
{
	(void)arg;
	unsigned char in[4096], out[8192], back[4096];
	for (size_t i = 0; i < sizeof in; i++)
		in[i] = (unsigned char)("livefix patches zlib "[i % 21]);
	for (;;) {
		uLongf n = sizeof out, m = sizeof back;
		if (compress2(out, &n, in, sizeof in, 6) != Z_OK ||
		    uncompress(back, &m, out, n) != Z_OK || m != sizeof in ||
		    memcmp(in, back, sizeof in) != 0)
			__atomic_add_fetch(&failures, 1, __ATOMIC_RELAXED);
		__atomic_add_fetch(&rounds, 1, __ATOMIC_RELAXED);
		last_err = zError(-7);
		last_bound = compressBound(ULONG_MAX - 1000);
		usleep(100);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 4;
	for (int i = 0; i < n; i++) {
		pthread_t t;
		pthread_create(&t, NULL, worker, NULL);
	}
	char line[256];
	int code;
	unsigned long len;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		if (sscanf(line, "e %d", &code) == 1)
			printf("[%s]\n", zError(code));
		else if (sscanf(line, "b %lu", &len) == 1)
			printf("%lu\n", compressBound(len));
		else if (line[0] == 'w')
			printf("[%s] %lu\n", last_err, last_bound);
		else if (line[0] == 'r')
			printf("%lu %lu\n", rounds, failures);
		else if (line[0] == 'v')
			printf("%s\n", zlibVersion());
		else
			printf("?\n");
	}
	return 0;
}
