package kernel_test

import "path/filepath"

// acceptanceCase is one source patch of issue 3 and what the diff engine
// must make of it.
type acceptanceCase struct {
	name    string   // module name, also the patch's short name
	patches []string // files under testdata/patches, applied in order
	level   int      // cumulative level (0: builder default)
	// changed are the running functions the live patch must replace
	// (klp_funcs), exactly: existing functions whose code changed,
	// including every caller a changed helper was inlined into. New
	// functions are not replacements; the guest checks prove they work.
	changed []string
	// refusal, when set, are substrings the builder's error must contain;
	// such a case must produce no module.
	refusal []string
}

func patchPath(name string) string { return filepath.Join("testdata", "patches", name) }

// buildCases are the cases that must build into a live patch.
var buildCases = []acceptanceCase{
	{name: "lf_case1", patches: []string{"01-cmdline-string.patch"}, changed: []string{"cmdline_proc_show"}},
	{name: "lf_case2", patches: []string{"02-meminfo-inlined-helper.patch"}, changed: []string{"meminfo_proc_show"}},
	{name: "lf_case3", patches: []string{"03-new-func-and-data.patch"}, changed: []string{"version_proc_show"}},
	{name: "lf_case4", patches: []string{"04-nonexported-and-static.patch"}, changed: []string{"filesystems_proc_show"}},
	{name: "lf_case5", patches: []string{"05-two-files.patch"}, changed: []string{"loadavg_proc_show"}},
	{name: "lf_case6", patches: []string{"06-module-binfmt-misc.patch"}, changed: []string{"bm_status_read"}},
	{name: "lf_case7", patches: []string{"07-shadow-variables.patch"}, changed: []string{"uptime_proc_show"}},
	{name: "lf_case8", patches: []string{"08-icmp-echo.patch"}, changed: []string{"icmp_echo"}},
	{name: "lf_case9_l1", patches: []string{"09-level1.patch"}, level: 1, changed: []string{"cmdline_proc_show"}},
	{name: "lf_case9_l2", patches: []string{"09-level2.patch"}, level: 2, changed: []string{"cmdline_proc_show", "version_proc_show"}},
}

// refusedCases must stop the build with a clear error and write no module.
var refusedCases = []acceptanceCase{
	{name: "lf_case10_data", patches: []string{"10-refuse-data-size.patch"}, refusal: []string{"core_pattern", "data size changed"}},
	{name: "lf_case10_init", patches: []string{"10-refuse-init.patch"}, refusal: []string{"proc_cmdline_init", "init code"}},
	{name: "lf_case10_ws", patches: []string{"10-refuse-whitespace.patch"}, refusal: []string{"no functional change"}},
}
