/* case: a 3-case switch (orig: compare chain, no .rodata) grows to 9 dense cases (patched: gcc 12 emits a jump table in new section .rodata.classify: code uses R_X86_64_32S .rodata.classify, the table holds R_X86_64_64 relocs into .text.classify) -> classify changed; the anonymous table is not listed as new data. (With "default: return -1" gcc 12 also split a classify.cold, so default calls handle_x.) */
extern int handle_x(int);

int classify(int op)
{
	switch (op) {
	case 0:
		return handle_x(10);
	case 1:
		return handle_x(20) + 1;
	case 2:
		return handle_x(30) * 2;
	default:
		return handle_x(op) - 100;
	}
}
