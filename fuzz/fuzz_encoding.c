/*
 * fuzz_encoding.c - libFuzzer target for wxp_base64_decode,
 * wxp_base64_encode and wxp_utf8_check, each on the whole input.
 * SPDX-License-Identifier: MIT
 *
 * Invariants: encode then decode gives the input back.  Decode accepts
 * exactly what the strict reference below accepts.  Encoding what it
 * decoded gives the input back, unless the last group has non-zero bits
 * after the data: RFC 4648, 3.5 lets a decoder accept such text, which
 * is not canonical.  wxp_utf8_check agrees with the reference decoder
 * below on acceptance and on the offset of the first bad byte.
 */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

static const char alphabet[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Returns the 6-bit value of c, or -1 for a character outside it. */
static int sextet(unsigned char c)
{
  const char *p = c ? strchr(alphabet, c) : NULL;

  return p ? (int)(p - alphabet) : -1;
}


/*
 * Accepts standard base64 with padding and nothing else: a multiple of
 * four characters, "=" only as the last one or two.  Sets *pad_bits when
 * the bits after the data in the last group are not zero.
 */
static int reference_base64(const uint8_t *s, size_t len, int *pad_bits)
{
  size_t pad = 0;
  size_t i;

  *pad_bits = 0;
  if (len % 4 != 0)
    return 0;
  while (pad < 2 && pad < len && s[len - 1 - pad] == '=')
    pad++;
  for (i = 0; i < len - pad; i++) {
    if (sextet(s[i]) < 0)
      return 0;
  }
  if (pad == 1)
    *pad_bits = (sextet(s[len - 2]) & 3) != 0;
  if (pad == 2)
    *pad_bits = (sextet(s[len - 3]) & 15) != 0;
  return 1;
}


static void check_base64(const uint8_t *data, size_t size)
{
  wxp_buf decoded = { 0 };
  wxp_buf encoded = { 0 };
  wxp_buf again = { 0 };
  wxp_status rc;
  int pad_bits;
  int accepted;

  FUZZ_ASSERT(wxp_base64_encode(data, size, &encoded) == WXP_OK);
  FUZZ_ASSERT(encoded.len == (size + 2) / 3 * 4);
  FUZZ_ASSERT(wxp_base64_decode(encoded.data, encoded.len, &again, NULL)
              == WXP_OK);
  FUZZ_ASSERT(again.len == size);
  FUZZ_ASSERT(size == 0 || memcmp(again.data, data, size) == 0);
  wxp_buf_free(&encoded);
  wxp_buf_free(&again);

  rc = wxp_base64_decode((const char *)data, size, &decoded, NULL);
  accepted = reference_base64(data, size, &pad_bits);
  FUZZ_ASSERT(rc == (accepted ? WXP_OK : WXP_EINVAL));
  if (rc == WXP_OK) {
    FUZZ_ASSERT(decoded.data != NULL);
    FUZZ_ASSERT(wxp_base64_encode(decoded.data, decoded.len, &encoded)
                == WXP_OK);
    FUZZ_ASSERT(encoded.len == size);
    FUZZ_ASSERT(pad_bits || size == 0
                || memcmp(encoded.data, data, size) == 0);
  }
  wxp_buf_free(&decoded);
  wxp_buf_free(&encoded);
}


/*
 * Decodes one UTF-8 character at s and returns its length, or 0 when
 * the platform rejects it: malformed, overlong, a surrogate, or above
 * U+FFFF (a 4-byte form, valid UTF-8 that the platform rejects).
 */
static size_t reference_utf8(const uint8_t *s, size_t left)
{
  uint32_t cp;
  size_t n;
  size_t i;

  if (s[0] < 0x80)
    return 1;
  if ((s[0] & 0xE0) == 0xC0) {
    n = 2;
    cp = s[0] & 0x1F;
  } else if ((s[0] & 0xF0) == 0xE0) {
    n = 3;
    cp = s[0] & 0x0F;
  } else {
    return 0;
  }
  if (left < n)
    return 0;
  for (i = 1; i < n; i++) {
    if ((s[i] & 0xC0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800))
    return 0;
  if (cp >= 0xD800 && cp <= 0xDFFF)
    return 0;
  return n;
}


static void check_utf8(const uint8_t *data, size_t size)
{
  char err[WXP_ERRBUF_SIZE];
  size_t offset = (size_t)-1;
  size_t i = 0;
  size_t n;
  wxp_status rc;

  err[0] = '\0';
  rc = wxp_utf8_check((const char *)data, size, &offset, err);
  while (i < size) {
    n = reference_utf8(data + i, size - i);
    if (n == 0)
      break;
    i += n;
  }
  if (i == size) {
    FUZZ_ASSERT(rc == WXP_OK);
  } else {
    FUZZ_ASSERT(rc == WXP_EINVAL);
    FUZZ_ASSERT(offset == i);
    FUZZ_ASSERT(err[0] != '\0');
  }
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  check_base64(data, size);
  check_utf8(data, size);
  return 0;
}
