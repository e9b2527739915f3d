/* Test target for internal/proc.
 *
 * usage: target NTHREADS [churn|mainexit|vfork]
 *
 * Starts NTHREADS workers (even ones spin, odd ones sleep in nanosleep), and
 * with "churn" one more thread that keeps creating and joining short-lived
 * threads. With "mainexit" the commands are served by another thread and
 * the main thread calls pthread_exit (it stays a zombie). With "vfork" one
 * more thread keeps calling vfork with a child that sleeps 300ms, so that
 * thread is almost always in an unstoppable (killable) wait. Prints one line
 *     ready pid=PID value=ADDR answer=ADDR
 * and then answers commands read from stdin, one per line:
 *     value  -> "value N"   (the global below)
 *     answer -> "answer N"  (calls answer() through a volatile pointer)
 *     usr1   -> "usr1 N"    (SIGUSR1 handler invocations)
 *     ping   -> "pong"
 *     exit   -> exit status 0
 * A failed read (e.g. a wrongly restarted syscall) exits with status 3.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

volatile long value = 7;
volatile long spin_sink;
static volatile sig_atomic_t usr1_count;

__attribute__((noinline, noipa)) int answer(void)
{
	return 1;
}

int (*volatile answer_fn)(void) = answer;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_count++;
}

static void *worker(void *arg)
{
	long i = (long)arg;
	for (;;) {
		if (i % 2 == 0) {
			for (long k = 0; k < 100000; k++)
				spin_sink += k;
		} else {
			struct timespec ts = {0, 1000000};
			nanosleep(&ts, NULL);
		}
	}
	return NULL;
}

static void *short_lived(void *arg)
{
	return arg;
}

static void *churner(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_t t;
		if (pthread_create(&t, NULL, short_lived, NULL) == 0)
			pthread_join(t, NULL);
	}
	return NULL;
}

static void *vforker(void *arg)
{
	(void)arg;
	for (;;) {
		pid_t pid = vfork();
		if (pid == 0) {
			struct timespec ts = {0, 300000000};
			nanosleep(&ts, NULL);
			_exit(0);
		}
		if (pid > 0)
			waitpid(pid, NULL, 0);
	}
	return NULL;
}

static void *serve(void *arg)
{
	char line[128];

	(void)arg;
	for (;;) {
		if (!fgets(line, sizeof line, stdin)) {
			if (feof(stdin))
				exit(0);
			printf("read error: %s\n", strerror(errno));
			exit(3);
		}
		if (!strncmp(line, "value", 5))
			printf("value %ld\n", value);
		else if (!strncmp(line, "answer", 6))
			printf("answer %d\n", answer_fn());
		else if (!strncmp(line, "usr1", 4))
			printf("usr1 %d\n", (int)usr1_count);
		else if (!strncmp(line, "ping", 4))
			printf("pong\n");
		else if (!strncmp(line, "exit", 4))
			exit(0);
		else
			printf("unknown command\n");
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 8;
	const char *mode = argc > 2 ? argv[2] : "";
	struct sigaction sa;
	pthread_t t;

	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);

	for (long i = 0; i < n; i++)
		if (pthread_create(&t, NULL, worker, (void *)i) != 0)
			return 2;
	if (!strcmp(mode, "churn") && pthread_create(&t, NULL, churner, NULL) != 0)
		return 2;
	if (!strcmp(mode, "vfork") && pthread_create(&t, NULL, vforker, NULL) != 0)
		return 2;

	printf("ready pid=%d value=%p answer=%p\n", (int)getpid(), (void *)&value, (void *)answer);
	if (!strcmp(mode, "mainexit")) {
		if (pthread_create(&t, NULL, serve, NULL) != 0)
			return 2;
		pthread_exit(NULL);
	}
	serve(NULL);
	return 0;
}
