// Package elfobj is livefix's model of an x86-64 ELF relocatable object
// (ET_REL): the files gcc writes for one translation unit and the files
// livefix writes for a live patch.
//
// A File holds sections, symbols and relocations as linked Go values
// rather than indices, so that the diff engine can drop, copy and rewire
// parts of an object freely. Read parses an object; (*File).Write lays it
// out again, regenerating the symbol table, the string tables and every
// index, offset and link. A read-then-write round trip keeps every
// section's contents, every symbol and every relocation, so readelf and
// objdump show the result as the same object.
//
// The model is deliberately small: it knows relocatable x86-64 objects,
// including the conventions of Linux kernel modules (SHF_RELA_LIVEPATCH
// relocation sections and SHN_LIVEPATCH symbols), and nothing else.
// Malformed input yields an error wrapping ErrFormat, never a panic.
package elfobj
