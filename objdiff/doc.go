// Package objdiff finds what a source patch changed in compiled code.
//
// Given the same translation unit compiled before and after a patch
// (x86-64 relocatable objects built with -ffunction-sections and
// -fdata-sections), Diff
//
//  1. analyses each object: its functions and data objects as symbol
//     ranges, and every relocation resolved to what it really points at
//     (a named symbol, or the content of a string literal, a mergeable
//     constant or an anonymous read-only table);
//  2. correlates the two objects' symbols by name, tolerating the
//     renumbering of gcc clones (.isra.N, .constprop.N, .part.N) and of
//     function-local statics (count.N), which it matches through the
//     functions that use them;
//  3. compares each correlated pair by bytes and by relocation targets,
//     recognising changes that only move __LINE__ values;
//  4. classifies the result into changed, new and refused symbols, with
//     a reason for every refusal (a writable object whose size or initial
//     value changed, __init code, a function without an ftrace entry,
//     a section it does not understand);
//  5. extracts the included parts (changed and new functions, new data,
//     copies of changed read-only data, the literals they use, and the
//     entries of kernel special sections that belong to them) into a new
//     relocatable object, in which every reference to unchanged code or
//     data is an undefined symbol carrying the name the running target
//     knows it by.
//
// The package knows nothing about kernel modules or processes: the klp
// and ulp packages turn its output into a livepatch module or a
// userspace patch.
package objdiff
