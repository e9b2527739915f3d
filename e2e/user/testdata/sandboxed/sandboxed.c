/* A program under a strict seccomp filter: mmap or mprotect asking for
 * PROT_EXEC kills the process (SECCOMP_RET_KILL_PROCESS), as sandboxes
 * that forbid new executable memory do. Commands on stdin:
 *   v   price(10)            (old code: 110, patched: 99)
 *   x   try mmap(PROT_EXEC): the filter kills the process
 *   p   pong
 * A worker thread calls price() all the time. */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile long ten = 10, sink;

__attribute__((noinline)) long price(long x)
{
	return x * 11;
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		sink = price(ten);
		usleep(50);
	}
	return NULL;
}

static void sandbox(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 1, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mprotect, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[2])),
		BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {sizeof f / sizeof f[0], f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
		perror("seccomp");
		_exit(1);
	}
}

int main(void)
{
	char line[64];
	pthread_t t;

	sandbox(); /* before the thread: it inherits the filter */
	pthread_create(&t, NULL, worker, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		switch (line[0]) {
		case 'v':
			printf("%ld\n", price(ten));
			break;
		case 'x':
			mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			printf("still alive\n");
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
