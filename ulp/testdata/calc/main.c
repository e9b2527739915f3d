/* Test driver: reads "CMD N" lines, prints one result line per command.
 * Lower-case commands call the executable's copy, upper-case the
 * library's. */
#include <stdio.h>
#include "calc.h"

int main(void)
{
	char line[64], c;
	int n;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		if (sscanf(line, "%c %d", &c, &n) != 2) {
			printf("?\n");
			continue;
		}
		switch (c) {
		case 'a': printf("%d\n", app_answer(n)); break;
		case 's': printf("%d\n", app_scaled(n)); break;
		case 'b': app_setbase(n); printf("ok\n"); break;
		case 't': app_settls(n); printf("ok\n"); break;
		case 'g': printf("%d\n", app_gettls()); break;
		case 'A': printf("%d\n", lib_answer(n)); break;
		case 'S': printf("%d\n", lib_scaled(n)); break;
		case 'B': lib_setbase(n); printf("ok\n"); break;
		case 'T': lib_settls(n); printf("ok\n"); break;
		case 'G': printf("%d\n", lib_gettls()); break;
		default: printf("?\n");
		}
	}
	return 0;
}
