// SPDX-License-Identifier: GPL-2.0
#define LF_SAMPLE_TEXT "lf_sample1 was here"
#define LF_SAMPLE_REPLACE false
#include "lf_sample.h"
