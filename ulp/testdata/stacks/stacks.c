/* Targets for the stack check (ulp TestStackCheck).
 *   stacks alt    a thread in outer() -> helper() takes SIGUSR1 on a
 *                 sigaltstack and parks in the handler: outer's frame is
 *                 only on the interrupted (main) stack
 *   stacks cold   a thread runs check(42), whose unlikely path (in
 *                 check.cold) parks in wait_cold()
 * Commands: r  release the parked thread; v  outer() and check(1) results
 *           p  pong
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile int park = 1, go, inhelper, inhandler;

__attribute__((noinline)) int helper(void)
{
	inhelper = 1;
	while (!go)
		__asm__ volatile("pause");
	return 1;
}

__attribute__((noinline)) int outer(void)
{
	return helper() + 1;
}

__attribute__((noinline, cold)) void wait_cold(void)
{
	inhandler = 1;
	while (park)
		__asm__ volatile("pause");
}

__attribute__((noinline)) int check(int x)
{
	if (__builtin_expect(x == 42, 0)) {
		wait_cold();
		return -1;
	}
	return x + 1;
}

static void on_usr1(int sig)
{
	(void)sig;
	inhandler = 1;
	while (park)
		__asm__ volatile("pause");
}

static void *alt_thread(void *arg)
{
	(void)arg;
	stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
	sigaltstack(&ss, NULL);
	outer();
	return NULL;
}

static void *cold_thread(void *arg)
{
	(void)arg;
	check(42);
	return NULL;
}

int main(int argc, char **argv)
{
	char line[64];
	pthread_t t;
	int alt = argc > 1 && strcmp(argv[1], "alt") == 0;

	struct sigaction sa = {.sa_handler = on_usr1, .sa_flags = SA_ONSTACK};
	sigaction(SIGUSR1, &sa, NULL);
	if (alt) {
		pthread_create(&t, NULL, alt_thread, NULL);
		while (!inhelper)
			usleep(100);
		pthread_kill(t, SIGUSR1);
	} else {
		pthread_create(&t, NULL, cold_thread, NULL);
	}
	while (!inhandler)
		usleep(100);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		switch (line[0]) {
		case 'r':
			park = 0;
			go = 1;
			pthread_join(t, NULL);
			printf("ok\n");
			break;
		case 'v':
			go = 1;
			printf("%d %d\n", outer(), check(1));
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
