/* reader: maps a file read-only, as a checksum or backup tool does, and
 * answers "s" with a checksum of the bytes it sees. */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct stat st;
	int fd = argc > 1 ? open(argv[1], O_RDONLY) : -1;
	if (fd < 0 || fstat(fd, &st) < 0)
		return 2;
	const unsigned char *p = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return 2;
	char line[16];
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	while (fgets(line, sizeof line, stdin)) {
		unsigned long sum = 0;
		for (off_t i = 0; i < st.st_size; i++)
			sum = sum * 31 + p[i];
		printf("%lu\n", sum);
	}
	return 0;
}
