/* A target for the process-lifecycle tests: forks, execs, has threads.
 * Commands on stdin, one reply line each:
 *   v   value(5) in this process (old code: 16, patched: 17)
 *   f   fork a child that keeps calling value(5) and storing the result
 *       in shared memory; replies with the child's pid
 *   c   the child's last value(5)
 *   k   kill the child and reap it
 *   e   exec this program again (same stdin/stdout): replies "ready"
 *   p   "pong"
 * Two worker threads call value() all the time.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((noinline)) long value(long x)
{
	return 3 * x + 1;
}

static volatile long *shared;
static volatile long sink;
static volatile long five = 5; /* value() is pure: keep its calls in loops */

static void *worker(void *arg)
{
	(void)arg;
	for (long i = 0;; i++) {
		sink = value(i);
		usleep(50);
	}
	return NULL;
}

int main(void)
{
	char line[64];
	pid_t child = 0;

	shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < 2; i++) {
		pthread_t t;
		pthread_create(&t, NULL, worker, NULL);
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		switch (line[0]) {
		case 'v':
			printf("%ld\n", value(five));
			break;
		case 'f':
			*shared = 0;
			child = fork();
			if (child == 0) {
				for (;;) {
					*shared = value(five);
					usleep(200);
				}
			}
			while (*shared == 0)
				usleep(100);
			printf("%d\n", (int)child);
			break;
		case 'c':
			/* Twice: the first store may come from a call made
			 * before the question. */
			for (int i = 0; i < 2; i++) {
				*shared = 0;
				while (*shared == 0)
					usleep(100);
			}
			printf("%ld\n", *shared);
			break;
		case 'k':
			kill(child, SIGKILL);
			waitpid(child, NULL, 0);
			printf("ok\n");
			break;
		case 'e':
			execl("/proc/self/exe", "life", (char *)NULL);
			printf("exec failed\n");
			break;
		case 'p':
			printf("pong\n");
			break;
		default:
			printf("?\n");
		}
	}
	return 0;
}
