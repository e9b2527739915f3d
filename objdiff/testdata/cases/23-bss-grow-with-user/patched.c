/* case: static bss buffer grows (static char logbuf[64] -> [128], .bss.logbuf) and log_put's bound check (sizeof) changes with it -> refused logbuf "data size changed" AND log_put changed (other lists still filled when refusing), exit 3. */
static char logbuf[128];
static unsigned int logpos;

void log_put(char c)
{
	logbuf[logpos % sizeof(logbuf)] = c;
	logpos++;
}

char log_get(unsigned int i)
{
	return logbuf[i & 63];
}
