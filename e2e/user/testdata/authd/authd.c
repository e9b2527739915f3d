/* authd: a threaded program using libauth. Worker threads check a
 * password in a loop; the main thread answers commands on stdin:
 *   q USER PW   -> the result of auth_check(USER, PW)
 *   w           -> what the workers last saw (their user equals the password)
 *   n           -> auth_attempts() > 0
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <unistd.h>
#include "auth.h"

static volatile int last = -1;

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		last = auth_check("bob1234", "bob1234");
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
	char line[256], user[100], pw[100];
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		if (sscanf(line, "q %99s %99s", user, pw) == 2)
			printf("%d\n", auth_check(user, pw));
		else if (line[0] == 'w')
			printf("%d\n", last);
		else if (line[0] == 'n')
			printf("%d\n", auth_attempts() > 0);
		else
			printf("?\n");
	}
	return 0;
}
