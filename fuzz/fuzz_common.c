/*
 * fuzz_common.c - fixed test material and input splitting shared by the
 * libFuzzer targets and by make_seeds.
 * SPDX-License-Identifier: MIT
 */
#include "fuzz_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * An RSA-2048 key made with "openssl genpkey" for these targets only.  It
 * is fixed, not generated at start, so that the seed corpus can hold
 * responses that it signed and the fuzzer starts from valid signatures.
 */
const char fuzz_test_key_pem[] =
  "-----BEGIN PRIVATE KEY-----\n"
  "MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCOtHIF0quNN6NY\n"
  "kfT0EG81svuWJz3Bmn6qHLxBNRH8mtrQoc0kx7vyKQ1ltNPgcDBg7poREOcPl2qw\n"
  "Dcr2yUh4SVMuf61JtufO7EtTUdlUsPNUPAxkUMbMq0VwcLa2YjleawwUbRy/PkI8\n"
  "bBPnTsj/OtxoPW6bT05TOkzqssObedrMIlKypiH2C1UJ6CH2J+bGm/dalz0dQqIb\n"
  "KIjbgnJVkz5PU8R8xKIBUTbC/vFL08UFxZJKCbk65lSfTB8U4bARXAqKRX5o9Eqm\n"
  "yk8OPm8OwJzhdLk9oth+EHrBBeUrlaBmZXI+9irXpMt4B6bCfpGjiN25bSZl0eud\n"
  "xfaDvso3AgMBAAECggEAO+PmEKSMI92sW6ER5RY6nhZKOQeqBuUgcKNTrKgprtKM\n"
  "r8+gCWYb7jMlcMBVxZU/8IZiuXPXDTeWamG3gyARno3jb5nc75loKvMHX+XzaHRF\n"
  "At6assUl0cK1h01+mQebHRGfBbmPPYHTCYmwRrzNZTReSQ8zKtI7RHmsyzkQF+EJ\n"
  "BMcOtl3RTjuSS//HJvkL3mLiKRBsG4TfJSt14d/nQ++Hyqcr6OqqF7OiEW673ZBX\n"
  "dEegz5+vIupdhme/D4JBEjkJGJsZihU9V6Hgq1vkERuMNdYsxqlt9BbWSLp6OZ3g\n"
  "8DSwZ5AyiNLVEtQK5ry9/eWvRn8EMP5FHq8Hx+dteQKBgQDIHyAvLJKI8qsCFQh5\n"
  "Ia8/u6+uL6cdIvgJ6jdH4hmUw4b7Id9d6qn9UNgkemoDrKGIjrwbxa2u/iUy8mkk\n"
  "H3Zsje/8VJDUqWkVHnXs61NZhWgomOOZ4JnXom9R3Zyizx6Sdf4JpG8jhtHHYPUI\n"
  "FaBQdvd+QQQdmhULdogWksK6vwKBgQC2jR6y+jKOx2/JzeEAxlvzDuZOJdPOFxuZ\n"
  "W+CRyxxy9o69CjKt6ZNupDxs6lScMkzoJ+mdw8NCLMTGqKT/M1bdjcfJtZz28+o1\n"
  "HppYdE7JmJhL6bgcYcHAuoZDFEcy2Deu8MsuGAn/xZDRHaD7SaEquRLBfcctvMys\n"
  "lJquTM+miQKBgE+f8tJSTcunolslu0VXHb+iEfighUGWlFJ9mplDYSJL2f06MQHR\n"
  "SOm9rQJ2oo/rtCn9gOMb+EtUW8C1qxfwXNI8d2xSyX2UGneIsysdRwCrkBH3Izgq\n"
  "oYum2dwc7SHqfyOPRxDXGFFuZzGJZnVdBXh+nWLiw5xznkP9WZCBvHFJAoGAJ+Bz\n"
  "0EzvNllChia++9hYxaN/k5qXxfEuSjXTvIVN1Z8eVxUfNPZNCmI+ANy/Vs92FVCC\n"
  "q7/Tq2T0JyE3ybeBRixudBWEED3/71KcDK57d3Yp7otDeI+yL1OPeJ+5XdX1c/WN\n"
  "rKf7py+VDtkWDU5sMlTzT+kV1Vvkqd5cW67TvWECgYBgxapIlSzSol1Vm4d/7GKR\n"
  "3Uhh9v/1yibH0a3We+POAu/huGNk88CaOIvsodVdnsoiU/BaDXC4wN4RwK9lbriE\n"
  "NAup7RnxNlghcgob5rAcqJZ6f55hv0eAybr9xjWyl5jBX27eWwtGVvfQVGztlS2S\n"
  "0pfC59gk8xOykT1nfxxBbQ==\n"
  "-----END PRIVATE KEY-----\n";

const unsigned char fuzz_apiv3_key[FUZZ_APIV3_KEY_SIZE] =
  "fuzz-apiv3-key-not-a-real-key-01";


void fuzz_assert_failed(const char *file, int line, const char *condition)
{
  fprintf(stderr, "%s:%d: invariant violated: %s\n", file, line, condition);
  abort();
}


/* Copies len bytes into field as a NUL-terminated malloc'd string. */
static void set_field(fuzz_field *field, const uint8_t *data, size_t len,
                      int present)
{
  field->present = present;
  field->len = present ? len : 0;
  field->text = malloc(field->len + 1);
  if (!field->text)
    abort();
  if (field->len)
    memcpy(field->text, data, field->len);
  field->text[field->len] = '\0';
}


void fuzz_split(const uint8_t *data, size_t size, fuzz_field *fields,
                size_t count)
{
  const uint8_t *newline;
  size_t len;
  size_t i;

  for (i = 0; i + 1 < count; i++) {
    newline = size ? memchr(data, '\n', size) : NULL;
    len = newline ? (size_t)(newline - data) : size;
    set_field(&fields[i], data, len, size > 0 && !(len == 1 && !data[0]));
    data += len;
    size -= len;
    if (newline) {
      data++;
      size--;
    }
  }
  set_field(&fields[count - 1], data, size, 1);
}


void fuzz_fields_free(fuzz_field *fields, size_t count)
{
  size_t i;

  for (i = 0; i < count; i++) {
    free(fields[i].text);
    fields[i].text = NULL;
  }
}
