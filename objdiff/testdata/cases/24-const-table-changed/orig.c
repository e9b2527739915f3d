/* case: a static const lookup table (static const unsigned short crc_lut[8], .rodata.crc_lut) changes one entry; crc_step's bytes/relocs are identical but the referenced read-only content differs -> crc_step changed, no refusal (read-only data is copied into the patch), exit 0. */
static const unsigned short crc_lut[8] = {
	0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5, 0x60c6, 0x70e7,
};

unsigned short crc_step(unsigned short crc, unsigned char b)
{
	return (crc << 3) ^ crc_lut[(crc >> 13) ^ (b & 7)];
}

unsigned short crc_init(void)
{
	return 0xffff;
}
