/*
 * fuzz_common.h - shared by the libFuzzer targets in fuzz/ and by the
 * seed generator: fixed test material, invariant checks and input
 * splitting.
 * SPDX-License-Identifier: MIT
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "../csrc/wxp.h"

/* The entry point that libFuzzer calls once per input. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The private key of fuzz_common.c, PKCS#8 PEM; test use only. */
extern const char fuzz_test_key_pem[];

/* The serial under which store_verify keeps the test key. */
#define FUZZ_TEST_SERIAL "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"

/* The APIv3 key that encrypts every certificate in the seed corpus. */
#define FUZZ_APIV3_KEY_SIZE 32
extern const unsigned char fuzz_apiv3_key[FUZZ_APIV3_KEY_SIZE];

/*
 * The clock of store_verify (2023-11-14 22:13:20 UTC), fixed so that
 * signed seeds stay inside the timestamp window.
 */
#define FUZZ_NOW INT64_C(1700000000)
#define FUZZ_WINDOW 300

/*
 * Reports a broken invariant on stderr and aborts, which libFuzzer
 * records as a crash with the input that caused it.
 */
void fuzz_assert_failed(const char *file, int line, const char *condition);

#define FUZZ_ASSERT(condition) \
  ((condition) ? (void)0 \
               : fuzz_assert_failed(__FILE__, __LINE__, #condition))

/*
 * Inputs of the targets that take several values are lines: each value
 * ends at "\n" and the last value is the rest of the input.  A line that
 * is exactly one NUL byte stands for an absent value (a missing header,
 * a JSON member left out), and so does a line after the input ends.
 */
typedef struct fuzz_field {
  char *text;      /* malloc'd copy, NUL-terminated; "" when absent */
  size_t len;
  int present;
} fuzz_field;

/* Splits data into count - 1 lines and the rest, in that order. */
void fuzz_split(const uint8_t *data, size_t size, fuzz_field *fields,
                size_t count);
void fuzz_fields_free(fuzz_field *fields, size_t count);

#endif
