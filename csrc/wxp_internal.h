/*
 * wxp_internal.h - helpers shared by the core's files, not exported.
 * SPDX-License-Identifier: MIT
 */
#ifndef WXP_INTERNAL_H
#define WXP_INTERNAL_H

#include "wxp.h"

#include <openssl/evp.h>

struct wxp_key {
  EVP_PKEY *pkey;
  int is_private;
};

#if defined(__GNUC__)
#define WXP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define WXP_PRINTF(f, a)
#endif

/* Writes a message into errbuf (when not NULL); returns status. */
wxp_status wxp_fail(char *errbuf, wxp_status status, const char *fmt, ...)
  WXP_PRINTF(3, 4);

/*
 * Like wxp_fail, then appends the OpenSSL error queue to the message and
 * clears the queue, so that the next call starts clean.
 */
wxp_status wxp_fail_ssl(char *errbuf, wxp_status status, const char *fmt,
                        ...) WXP_PRINTF(3, 4);

/* Wraps an EVP_PKEY, taking ownership of it. */
wxp_key *wxp_key_wrap(EVP_PKEY *pkey, int is_private);

/* Returns 1 for a WECHATPAY/SIGNTEST/ probe signature. */
int wxp_is_probe(const char *signature, size_t len);

/* Writes bytes as upper-case hex, two digits a byte, NUL-terminated. */
void wxp_hex_upper(const unsigned char *data, size_t len, char *out);

#endif
