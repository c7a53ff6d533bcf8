/*
 * fuzz_store_verify.c - libFuzzer target for wxp_store_verify with a
 * store that contains the test key under FUZZ_TEST_SERIAL.
 * SPDX-License-Identifier: MIT
 *
 * The input is four lines and the rest: Wechatpay-Serial,
 * Wechatpay-Timestamp, Wechatpay-Nonce and Wechatpay-Signature, then the
 * body.  A line of one NUL byte is a missing header; the header values
 * are C strings, so they end at their first NUL as they do for callers.
 * The clock is FUZZ_NOW.
 *
 * Invariants: the status is the one that the checks in wxp.h give, in
 * their documented order, computed here independently; WXP_OK only for
 * a signature that OpenSSL accepts over "timestamp\nnonce\nbody\n"; and
 * the signature that the key itself makes always verifies.
 */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

enum { SERIAL, TIMESTAMP, NONCE, SIGNATURE, BODY, FIELD_COUNT };

static wxp_store *store;
static wxp_key *test_key;
static EVP_PKEY *openssl_key;

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  char err[WXP_ERRBUF_SIZE];
  BIO *bio;

  (void)argc;
  (void)argv;
  store = wxp_store_new();
  if (!store
      || wxp_key_load_private(fuzz_test_key_pem, strlen(fuzz_test_key_pem),
                              &test_key, err) != WXP_OK
      || wxp_store_put(store, FUZZ_TEST_SERIAL, test_key, 0, WXP_NEVER,
                       WXP_SOURCE_PUBLIC_KEY) != WXP_OK)
    abort();

  bio = BIO_new_mem_buf(fuzz_test_key_pem, -1);
  openssl_key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  if (!openssl_key)
    abort();
  return 0;
}


/* Parses a timestamp as wxp.h describes it: decimal digits, no sign. */
static int reference_timestamp(const char *text, int64_t *out)
{
  int64_t v = 0;
  const char *p;

  if (*text == '\0')
    return 0;
  for (p = text; *p; p++) {
    if (*p < '0' || *p > '9')
      return 0;
    if (v > (INT64_MAX - (*p - '0')) / 10)
      return 0;
    v = v * 10 + (*p - '0');
  }
  *out = v;
  return 1;
}


/* The status wxp_store_verify must return, up to the signature check. */
static wxp_status expected_status(const fuzz_field *f)
{
  int64_t ts;
  size_t i;

  for (i = SERIAL; i <= SIGNATURE; i++) {
    if (!f[i].present)
      return WXP_EMISSING;
  }
  if (!reference_timestamp(f[TIMESTAMP].text, &ts))
    return WXP_EHEADER;
  if (ts <= FUZZ_NOW - FUZZ_WINDOW || ts >= FUZZ_NOW + FUZZ_WINDOW)
    return WXP_ESTALE;
  if (strncmp(f[SIGNATURE].text, "WECHATPAY/SIGNTEST/", 19) == 0)
    return WXP_EPROBE;
  if (strcmp(f[SERIAL].text, FUZZ_TEST_SERIAL) != 0)
    return WXP_ESERIAL;
  return WXP_OK;
}


/* Builds the signed message "timestamp\nnonce\nbody\n" with malloc. */
static char *message_of(const fuzz_field *f, size_t *len)
{
  size_t ts_len = strlen(f[TIMESTAMP].text);
  size_t nonce_len = strlen(f[NONCE].text);
  char *m;

  *len = ts_len + nonce_len + f[BODY].len + 3;
  m = malloc(*len);
  if (!m)
    abort();
  memcpy(m, f[TIMESTAMP].text, ts_len);
  m[ts_len] = '\n';
  memcpy(m + ts_len + 1, f[NONCE].text, nonce_len);
  m[ts_len + 1 + nonce_len] = '\n';
  memcpy(m + ts_len + nonce_len + 2, f[BODY].text, f[BODY].len);
  m[*len - 1] = '\n';
  return m;
}


/* Verifies with OpenSSL alone, its own lenient base64 decoder included. */
static int openssl_verifies(const char *message, size_t len,
                            const char *signature)
{
  size_t b64_len = strlen(signature);
  unsigned char *raw = malloc(b64_len / 4 * 3 + 3);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  int raw_len;
  int ok = 0;

  if (!raw || !ctx)
    abort();
  raw_len = EVP_DecodeBlock(raw, (const unsigned char *)signature,
                            (int)b64_len);
  /* EVP_DecodeBlock counts a zero byte for each "=" of padding. */
  if (raw_len > 0 && b64_len >= 2 && signature[b64_len - 1] == '=')
    raw_len -= signature[b64_len - 2] == '=' ? 2 : 1;
  if (raw_len > 0
      && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL,
                              openssl_key) == 1)
    ok = EVP_DigestVerify(ctx, raw, (size_t)raw_len,
                          (const unsigned char *)message, len) == 1;
  EVP_MD_CTX_free(ctx);
  free(raw);
  ERR_clear_error();
  return ok;
}


/* Returns 1 when signature is exactly what the test key makes. */
static int is_own_signature(const char *message, size_t len,
                            const char *signature)
{
  wxp_buf own = { 0 };
  int same;

  if (wxp_sign(test_key, message, len, &own, NULL) != WXP_OK)
    abort();
  same = strcmp(own.data, signature) == 0;
  wxp_buf_free(&own);
  return same;
}


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  fuzz_field f[FIELD_COUNT];
  char err[WXP_ERRBUF_SIZE];
  wxp_status expected;
  wxp_status rc;
  char *message;
  size_t message_len;

  fuzz_split(data, size, f, FIELD_COUNT);
  err[0] = '\0';
  rc = wxp_store_verify(store, f[SERIAL].present ? f[SERIAL].text : NULL,
                        f[TIMESTAMP].present ? f[TIMESTAMP].text : NULL,
                        f[NONCE].present ? f[NONCE].text : NULL,
                        f[SIGNATURE].present ? f[SIGNATURE].text : NULL,
                        f[BODY].text, f[BODY].len, FUZZ_NOW, FUZZ_WINDOW,
                        err);
  FUZZ_ASSERT(rc == WXP_OK || err[0] != '\0');
  FUZZ_ASSERT(ERR_peek_error() == 0);

  expected = expected_status(f);
  if (expected != WXP_OK) {
    FUZZ_ASSERT(rc == expected);
  } else {
    FUZZ_ASSERT(rc == WXP_OK || rc == WXP_ESIGNATURE);
    message = message_of(f, &message_len);
    if (rc == WXP_OK)
      FUZZ_ASSERT(openssl_verifies(message, message_len, f[SIGNATURE].text));
    else if (strlen(f[SIGNATURE].text) == 344)
      FUZZ_ASSERT(!is_own_signature(message, message_len,
                                    f[SIGNATURE].text));
    free(message);
  }

  fuzz_fields_free(f, FIELD_COUNT);
  return 0;
}
