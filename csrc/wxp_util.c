/*
 * wxp_util.c - status messages, buffers, base64, UTF-8 and nonces.
 * SPDX-License-Identifier: MIT
 */
#include "wxp_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>

static const char *const status_text[WXP_STATUS_COUNT] = {
  "ok",
  "out of memory",
  "invalid argument",
  "key or certificate could not be loaded",
  "cryptographic operation failed",
  "decryption failed",
  "missing header or field",
  "timestamp outside the accepted window",
  "malformed header",
  "signature is a WECHATPAY/SIGNTEST/ probe",
  "no key for this serial",
  "signature does not match",
  "invalid JSON",
  "network failure"
};

const char *wxp_strerror(wxp_status status)
{
  if ((unsigned)status >= WXP_STATUS_COUNT)
    return "unknown status";
  return status_text[status];
}


wxp_status wxp_buf_reserve(wxp_buf *buf, size_t extra)
{
  size_t need;
  size_t cap;
  char *grown;

  if (extra > SIZE_MAX - buf->len - 1)
    return WXP_ENOMEM;
  need = buf->len + extra + 1;
  if (need <= buf->cap)
    return WXP_OK;

  cap = buf->cap ? buf->cap : 64;
  while (cap < need)
    cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  grown = realloc(buf->data, cap);
  if (!grown)
    return WXP_ENOMEM;
  buf->data = grown;
  buf->cap = cap;
  return WXP_OK;
}


wxp_status wxp_buf_append(wxp_buf *buf, const void *data, size_t len)
{
  wxp_status rc;

  rc = wxp_buf_reserve(buf, len);
  if (rc != WXP_OK)
    return rc;

  if (len)
    memcpy(buf->data + buf->len, data, len);
  buf->len += len;
  buf->data[buf->len] = '\0';
  return WXP_OK;
}


void wxp_buf_free(wxp_buf *buf)
{
  free(buf->data);
  buf->data = NULL;
  buf->len = 0;
  buf->cap = 0;
}


void wxp_buf_wipe(wxp_buf *buf)
{
  if (buf->data)
    OPENSSL_cleanse(buf->data, buf->cap);
  wxp_buf_free(buf);
}


wxp_status wxp_fail(char *errbuf, wxp_status status, const char *fmt, ...)
{
  va_list ap;

  if (!errbuf)
    return status;
  va_start(ap, fmt);
  vsnprintf(errbuf, WXP_ERRBUF_SIZE, fmt, ap);
  va_end(ap);
  return status;
}


/* Appends "(lib: reason)" for each queued OpenSSL error, then clears. */
static void append_ssl_errors(char *errbuf)
{
  unsigned long code;
  size_t used;
  char reason[160];

  while ((code = ERR_get_error()) != 0) {
    if (!errbuf)
      continue;
    used = strlen(errbuf);
    if (used + 8 >= WXP_ERRBUF_SIZE)
      continue;
    ERR_error_string_n(code, reason, sizeof(reason));
    snprintf(errbuf + used, WXP_ERRBUF_SIZE - used, " (%s)", reason);
  }
  ERR_clear_error();
}


wxp_status wxp_fail_ssl(char *errbuf, wxp_status status, const char *fmt,
                        ...)
{
  va_list ap;

  if (errbuf) {
    va_start(ap, fmt);
    vsnprintf(errbuf, WXP_ERRBUF_SIZE, fmt, ap);
    va_end(ap);
  }
  append_ssl_errors(errbuf);
  return status;
}


void wxp_hex_upper(const unsigned char *data, size_t len, char *out)
{
  static const char digits[] = "0123456789ABCDEF";
  size_t i;

  for (i = 0; i < len; i++) {
    out[2 * i] = digits[data[i] >> 4];
    out[2 * i + 1] = digits[data[i] & 0x0f];
  }
  out[2 * len] = '\0';
}


wxp_status wxp_nonce(char out[33], char *errbuf)
{
  unsigned char raw[16];

  if (RAND_bytes(raw, sizeof(raw)) != 1)
    return wxp_fail_ssl(errbuf, WXP_ECRYPTO, "random generator failed");
  wxp_hex_upper(raw, sizeof(raw), out);
  return WXP_OK;
}

void wxp_sleep(double seconds)
{
  struct timespec ts;

  if (!(seconds > 0))
    return;
  ts.tv_sec = (time_t)seconds;
  ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}


double wxp_monotonic(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* {====================================================================
 * Base64
 * ===================================================================== */

static const char b64_alphabet[] =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

wxp_status wxp_base64_encode(const void *data, size_t len, wxp_buf *out)
{
  const unsigned char *in = data;
  size_t i;
  size_t at;
  unsigned v;
  wxp_status rc;

  if (len > SIZE_MAX / 2)
    return WXP_ENOMEM;
  rc = wxp_buf_reserve(out, (len + 2) / 3 * 4);
  if (rc != WXP_OK)
    return rc;

  at = out->len;
  for (i = 0; i + 2 < len; i += 3) {
    v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    out->data[at++] = b64_alphabet[v >> 18];
    out->data[at++] = b64_alphabet[(v >> 12) & 63];
    out->data[at++] = b64_alphabet[(v >> 6) & 63];
    out->data[at++] = b64_alphabet[v & 63];
  }
  if (i < len) {
    v = (unsigned)in[i] << 16;
    if (i + 1 < len)
      v |= (unsigned)in[i + 1] << 8;
    out->data[at++] = b64_alphabet[v >> 18];
    out->data[at++] = b64_alphabet[(v >> 12) & 63];
    out->data[at++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
    out->data[at++] = '=';
  }

  out->len = at;
  out->data[at] = '\0';
  return WXP_OK;
}


static int b64_value(unsigned char c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}


/*
 * On failure out is left as it was: every character is checked before
 * anything is written, because callers such as wxp_verify do not free
 * the buffer when decoding fails.
 */
wxp_status wxp_base64_decode(const char *text, size_t len, wxp_buf *out,
                             char *errbuf)
{
  size_t i;
  size_t pad = 0;
  unsigned char *group;
  int v[4];
  int k;
  wxp_status rc;

  if (len % 4 != 0)
    return wxp_fail(errbuf, WXP_EINVAL,
                    "invalid base64: length %zu is not a multiple of 4", len);
  if (len >= 1 && text[len - 1] == '=')
    pad++;
  if (len >= 2 && text[len - 2] == '=')
    pad++;
  for (i = 0; i < len - pad; i++) {
    if (b64_value((unsigned char)text[i]) < 0)
      return wxp_fail(errbuf, WXP_EINVAL,
                      "invalid base64: unexpected character at offset %zu",
                      i);
  }

  rc = wxp_buf_reserve(out, len / 4 * 3);
  if (rc != WXP_OK)
    return rc;
  for (i = 0; i < len; i += 4) {
    for (k = 0; k < 4; k++) {
      int is_pad = i + (size_t)k >= len - pad;
      v[k] = is_pad ? 0 : b64_value((unsigned char)text[i + (size_t)k]);
    }
    group = (unsigned char *)out->data + out->len;
    group[0] = (unsigned char)(v[0] << 2 | v[1] >> 4);
    group[1] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
    group[2] = (unsigned char)((v[2] & 3) << 6 | v[3]);
    out->len += i + 4 == len ? 3 - pad : 3;
  }
  out->data[out->len] = '\0';
  return WXP_OK;
}

/* {====================================================================
 * UTF-8
 * ===================================================================== */

/* Returns the length of the sequence at s, or 0 when it is not allowed. */
static size_t utf8_sequence(const unsigned char *s, size_t left)
{
  if (s[0] < 0x80)
    return 1;
  if (s[0] >= 0xC2 && s[0] <= 0xDF)
    return left >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (s[0] >= 0xE0 && s[0] <= 0xEF) {
    if (left < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
      return 0;
    if (s[0] == 0xE0 && s[1] < 0xA0)
      return 0;                   /* overlong */
    if (s[0] == 0xED && s[1] >= 0xA0)
      return 0;                   /* UTF-16 surrogate */
    return 3;
  }
  return 0;
}


wxp_status wxp_utf8_check(const char *text, size_t len, size_t *offset,
                          char *errbuf)
{
  const unsigned char *s = (const unsigned char *)text;
  size_t i = 0;
  size_t n;

  while (i < len) {
    n = utf8_sequence(s + i, len - i);
    if (n == 0) {
      if (offset)
        *offset = i;
      if (s[i] >= 0xF0 && s[i] <= 0xF4)
        return wxp_fail(errbuf, WXP_EINVAL,
                        "4-byte UTF-8 character (such as an emoji) at byte "
                        "%zu; the platform accepts only 1- to 3-byte "
                        "characters", i + 1);
      return wxp_fail(errbuf, WXP_EINVAL, "invalid UTF-8 at byte %zu",
                      i + 1);
    }
    i += n;
  }
  return WXP_OK;
}
