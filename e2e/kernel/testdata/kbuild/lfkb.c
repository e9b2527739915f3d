// SPDX-License-Identifier: GPL-2.0
/*
 * lfkb: the guest-side helper of livefix's kbuild e2e cases. Built
 * statically at test time; busybox has no way to reach these kernel APIs.
 *
 *   lfkb hash ALG KEYHEX DATA   digest of DATA through an AF_ALG hash socket
 *                               (KEYHEX "-" for no key; DATA "-" for the empty
 *                               message, "hex:HEX" for bytes, or text),
 *                               printed in hex
 *   lfkb tipc stream|dgram|rdm  create an AF_TIPC socket, print "ok"
 *
 * Errors print "error: MESSAGE" and exit 1.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/if_alg.h>

#ifndef AF_TIPC
#define AF_TIPC 30
#endif

static int fail(const char *what)
{
	printf("error: %s: %s\n", what, strerror(errno));
	return 1;
}

static int unhex(const char *s, unsigned char *out, size_t max)
{
	size_t n = strlen(s) / 2, i;

	if (strlen(s) % 2 || n > max)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned int v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = v;
	}
	return n;
}

static int hash(const char *alg, const char *keyhex, const char *data)
{
	struct sockaddr_alg sa = { .salg_family = AF_ALG, .salg_type = "hash" };
	unsigned char key[64], msg[4096], out[64];
	int tfm, op, klen = 0, mlen = 0, n, i;

	strncpy((char *)sa.salg_name, alg, sizeof(sa.salg_name) - 1);
	if (strcmp(keyhex, "-") && (klen = unhex(keyhex, key, sizeof(key))) < 0) {
		printf("error: bad key\n");
		return 1;
	}
	if (!strncmp(data, "hex:", 4)) {
		if ((mlen = unhex(data + 4, msg, sizeof(msg))) < 0) {
			printf("error: bad data\n");
			return 1;
		}
	} else if (strcmp(data, "-")) {
		mlen = strlen(data);
		if (mlen > (int)sizeof(msg))
			mlen = sizeof(msg);
		memcpy(msg, data, mlen);
	}
	tfm = socket(AF_ALG, SOCK_SEQPACKET, 0);
	if (tfm < 0)
		return fail("socket");
	if (bind(tfm, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return fail("bind");
	if (klen && setsockopt(tfm, SOL_ALG, ALG_SET_KEY, key, klen) < 0)
		return fail("setkey");
	op = accept(tfm, NULL, 0);
	if (op < 0)
		return fail("accept");
	if (mlen && write(op, msg, mlen) != mlen)
		return fail("write");
	n = read(op, out, sizeof(out));
	if (n < 0)
		return fail("read");
	for (i = 0; i < n; i++)
		printf("%02x", out[i]);
	printf("\n");
	return 0;
}

static int tipc(const char *type)
{
	int t, fd;

	if (!strcmp(type, "stream"))
		t = SOCK_STREAM;
	else if (!strcmp(type, "dgram"))
		t = SOCK_DGRAM;
	else if (!strcmp(type, "rdm"))
		t = SOCK_RDM;
	else {
		printf("error: unknown socket type %s\n", type);
		return 1;
	}
	fd = socket(AF_TIPC, t, 0);
	if (fd < 0)
		return fail("socket");
	close(fd);
	printf("ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "hash"))
		return hash(argv[2], argv[3], argv[4]);
	if (argc == 3 && !strcmp(argv[1], "tipc"))
		return tipc(argv[2]);
	fprintf(stderr, "usage: lfkb hash ALG KEYHEX DATA | lfkb tipc stream|dgram|rdm\n");
	return 2;
}
