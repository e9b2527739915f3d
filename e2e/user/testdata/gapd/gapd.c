/* gapd: a target for the userspace patching benchmark.
 *
 *   gapd N   N worker threads call check() in a loop and record the
 *            longest time between two of their calls; the main thread
 *            answers commands on stdin, one reply line each:
 *
 *   z   reset the longest gaps; replies "ok" once every worker has
 *   m   the longest gap in ns since the last z, once every worker has
 *       made a call after the m arrived (a thread that was not scheduled
 *       for a while has its gap counted too)
 *   w   when the longest gap of the last m began and ended, and the
 *       worker's thread id: "START END TID", CLOCK_MONOTONIC ns (to set
 *       against the steps a command traced with LIVEFIX_TRACE=1)
 *   v   check(1) from the main thread: 4, or 5 when patched
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAXW 64

struct worker {
	long maxgap, gapstart;
	int tid;
	volatile long last;
	volatile int reset;
} __attribute__((aligned(64)));

static struct worker w[MAXW];
static long nw;

__attribute__((noinline)) long check(long x)
{
	return 3 * x + 1;
}

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *work(void *arg)
{
	struct worker *me = arg;
	me->tid = gettid();
	long last = now_ns(), sum = 0;

	for (long i = 0;; i++) {
		sum += check(i);
		long t = now_ns();
		if (me->reset) {
			me->maxgap = 0;
			me->gapstart = 0;
			__atomic_store_n(&me->reset, 0, __ATOMIC_RELEASE);
		} else if (t - last > me->maxgap) {
			me->maxgap = t - last;
			me->gapstart = last;
		}
		last = t;
		__atomic_store_n(&me->last, t, __ATOMIC_RELEASE);
	}
	return (void *)sum;
}

/* wait_all waits (up to 5 s) until every worker satisfies done. */
static void wait_all(int (*done)(struct worker *, long), long arg)
{
	long end = now_ns() + 5000000000L;

	for (long i = 0; i < nw && now_ns() < end;)
		if (done(&w[i], arg))
			i++;
		else
			usleep(100);
}

static int was_reset(struct worker *x, long arg)
{
	(void)arg;
	return !__atomic_load_n(&x->reset, __ATOMIC_ACQUIRE);
}

static int called_since(struct worker *x, long t)
{
	return __atomic_load_n(&x->last, __ATOMIC_ACQUIRE) > t;
}

int main(int argc, char **argv)
{
	char line[64];
	pthread_t t;
	long wstart = 0, wend = 0;
	int wtid = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	nw = argc > 1 ? atol(argv[1]) : 1;
	if (nw < 1 || nw > MAXW)
		return 2;
	for (long i = 0; i < nw; i++)
		pthread_create(&t, NULL, work, &w[i]);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		long m = 0;
		switch (line[0]) {
		case 'z':
			for (long i = 0; i < nw; i++)
				w[i].reset = 1;
			wait_all(was_reset, 0);
			printf("ok\n");
			break;
		case 'm':
			wait_all(called_since, now_ns());
			for (long i = 0; i < nw; i++)
				if (w[i].maxgap > m) {
					m = w[i].maxgap;
					wstart = w[i].gapstart;
					wend = wstart + m;
					wtid = w[i].tid;
				}
			printf("%ld\n", m);
			break;
		case 'w':
			printf("%ld %ld %d\n", wstart, wend, wtid);
			break;
		case 'v':
			printf("%ld\n", check(1));
			break;
		default:
			printf("pong\n");
		}
	}
	return 0;
}
