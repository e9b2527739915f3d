// SPDX-License-Identifier: GPL-2.0
#define LF_SAMPLE_TEXT "lf_sample2 was here"
#define LF_SAMPLE_REPLACE true
#include "lf_sample.h"
