/* Runs one SQL statement per stdin line and prints the first column of
 * the first row, or "error: MESSAGE". */
#include <stdio.h>
#include <string.h>
#include "sqlite3-binding.h"

int main(void)
{
	sqlite3 *db;
	char line[1024];

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (sqlite3_open(":memory:", &db) != SQLITE_OK)
		return 1;
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		sqlite3_stmt *st;
		line[strcspn(line, "\n")] = 0;
		if (sqlite3_prepare_v2(db, line, -1, &st, NULL) != SQLITE_OK) {
			printf("error: %s\n", sqlite3_errmsg(db));
			continue;
		}
		int rc = sqlite3_step(st);
		if (rc == SQLITE_ROW)
			printf("%s\n", (const char *)sqlite3_column_text(st, 0));
		else if (rc == SQLITE_DONE)
			printf("done\n");
		else
			printf("error: %s\n", sqlite3_errmsg(db));
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return 0;
}
