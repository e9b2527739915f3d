/* cnt: sets libcnt's exported counter (its copy-relocated copy) and
 * prints get() for every line on stdin. */
#include <stdio.h>

extern int counter;
int get(void);

int main(void)
{
	char line[16];
	counter = 42;
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin))
		printf("%d\n", get());
	return 0;
}
