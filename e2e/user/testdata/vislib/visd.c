/* visd: a threaded program using libvis. A worker calls vis_name(-1) in
 * a loop; the main thread answers commands on stdin:
 *   n I -> vis_name(I)
 *   t I -> vis_tail(I)
 *   c   -> vis_count() > 0
 *   w   -> what the worker last saw
 */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include "vis.h"

static const char *volatile last = "";

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		last = vis_name(-1);
		usleep(100);
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	char line[64];
	int i;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		if (sscanf(line, "n %d", &i) == 1)
			printf("%s\n", vis_name(i));
		else if (sscanf(line, "t %d", &i) == 1)
			printf("%d\n", vis_tail(i));
		else if (line[0] == 'c')
			printf("%d\n", vis_count() > 0);
		else if (line[0] == 'w')
			printf("%s\n", last);
		else
			printf("?\n");
	}
	return 0;
}
