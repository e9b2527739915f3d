/* Multi-threaded targets for the ulp tests.
 *
 *   workers stress N   N threads call value() in tight loops and count
 *                      old (3x+1), new (3x+2) and wrong answers
 *   workers busy       one thread is parked inside spin() until SIGUSR1
 *   workers gap N      N threads call value() and record the longest time
 *                      between two calls (benchmarks: the pause seen from
 *                      inside the target)
 *   workers rate       idle; "R MS" measures value() calls per MS ms
 *
 * Commands on stdin, one reply line each:
 *   c   "OLD NEW BAD" call counts (stress)
 *   r   the last result of spin() (busy)
 *   z   reset the longest gaps (gap); m: print the longest gap in ns
 *   R   calls of value() in the given number of milliseconds (rate)
 *   p   "pong"
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int park = 1;
static volatile int last = -1;
static long counts[64][3] __attribute__((aligned(64)));

__attribute__((noinline)) long value(long x)
{
	return 3 * x + 1;
}

__attribute__((noinline)) int spin(int x)
{
	while (park)
		__asm__ volatile("pause");
	return x + 1;
}

static void *stress(void *arg)
{
	long id = (long)arg, *c = counts[id];

	for (long i = 0;; i++) {
		long r = value(i);
		if (r == 3 * i + 1)
			__atomic_store_n(&c[0], c[0] + 1, __ATOMIC_RELAXED);
		else if (r == 3 * i + 2)
			__atomic_store_n(&c[1], c[1] + 1, __ATOMIC_RELAXED);
		else {
			__atomic_store_n(&c[2], c[2] + 1, __ATOMIC_RELAXED);
			fprintf(stderr, "wrong answer %ld for %ld\n", r, i);
		}
	}
	return NULL;
}

static long maxgap[64][8] __attribute__((aligned(64)));
static volatile int reset[64];

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *gap(void *arg)
{
	long id = (long)arg, last = now_ns(), sum = 0;

	for (long i = 0;; i++) {
		sum += value(i);
		long t = now_ns();
		if (reset[id]) {
			reset[id] = 0;
			maxgap[id][0] = 0;
		} else if (t - last > maxgap[id][0])
			maxgap[id][0] = t - last;
		last = t;
	}
	return (void *)sum;
}

static long rate(long ms)
{
	long end = now_ns() + ms * 1000000L, n = 0, sum = 0;

	while (now_ns() < end) {
		for (int k = 0; k < 1000; k++)
			sum += value(n + k);
		n += 1000;
	}
	return sum == 42 ? 0 : n;
}

static void *busy(void *arg)
{
	(void)arg;
	for (;;) {
		last = spin(1);
		usleep(500);
	}
	return NULL;
}

static void unpark(int sig)
{
	(void)sig;
	park = 0;
}

int main(int argc, char **argv)
{
	pthread_t t;
	char line[64];
	long n = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && strcmp(argv[1], "stress") == 0) {
		n = argc > 2 ? atol(argv[2]) : 8;
		if (n < 1 || n > 64)
			return 2;
		for (long i = 0; i < n; i++)
			pthread_create(&t, NULL, stress, (void *)i);
	} else if (argc > 1 && strcmp(argv[1], "gap") == 0) {
		n = argc > 2 ? atol(argv[2]) : 1;
		if (n < 1 || n > 64)
			return 2;
		for (long i = 0; i < n; i++)
			pthread_create(&t, NULL, gap, (void *)i);
	} else if (argc > 1 && strcmp(argv[1], "rate") == 0) {
	} else if (argc > 1 && strcmp(argv[1], "busy") == 0) {
		signal(SIGUSR1, unpark);
		pthread_create(&t, NULL, busy, NULL);
	} else {
		return 2;
	}
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		long s[3] = { 0, 0, 0 };
		switch (line[0]) {
		case 'c':
			for (long i = 0; i < n; i++)
				for (int k = 0; k < 3; k++)
					s[k] += __atomic_load_n(&counts[i][k], __ATOMIC_RELAXED);
			printf("%ld %ld %ld\n", s[0], s[1], s[2]);
			break;
		case 'r':
			printf("%d\n", last);
			break;
		case 'z':
			for (long i = 0; i < n; i++)
				reset[i] = 1;
			printf("ok\n");
			break;
		case 'm': {
			long m = 0;
			for (long i = 0; i < n; i++)
				if (maxgap[i][0] > m)
					m = maxgap[i][0];
			printf("%ld\n", m);
			break;
		}
		case 'R':
			printf("%ld\n", rate(atol(line + 1)));
			break;
		default:
			printf("pong\n");
		}
	}
	return 0;
}
